//! The tracking page's sign-in: a gateway user and password give a login ticket (the same
//! ticket `POST /api/v1/Session` gives), kept in the cookie [`SESSION_COOKIE`]
//! (`HttpOnly; Secure; SameSite=Strict; Path=/`, `__Host-` prefix so no subdomain can set it).
//!
//! CSRF: every form carries a token. Signed in, it is derived from the ticket
//! (SHA-256 of a label and the ticket), so it needs no server state and cannot be computed
//! without the HttpOnly cookie. The sign-in form itself uses a double-submit token: a random
//! value in the short-lived cookie [`LOGIN_COOKIE`] that the form must repeat. Form posts must
//! also come from this origin ([`super::same_origin`]).

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Peer, WebError, WebState, html, same_origin};
use crate::directory::User;
use crate::issuer::{Credentials, IssuerError, token};
use crate::secret::Secret;

/// The session cookie: the login ticket.
pub const SESSION_COOKIE: &str = "__Host-sallyport";
/// The sign-in form's double-submit CSRF cookie.
pub const LOGIN_COOKIE: &str = "__Host-sallyport-login";

/// A signed-in browser.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
    pub ticket: Secret<String>,
}

impl SignedIn {
    /// The CSRF token every form of this sign-in must carry.
    pub fn csrf(&self) -> String {
        csrf_for(&self.ticket)
    }

    /// Checks a form's CSRF token in constant time.
    pub fn check_csrf(&self, sent: &str) -> Result<(), WebError> {
        if bool::from(self.csrf().as_bytes().ct_eq(sent.as_bytes())) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }
}

fn csrf_for(ticket: &Secret<String>) -> String {
    let mut h = Sha256::new();
    h.update(b"sallyport-web-csrf\0");
    h.update(ticket.expose().as_bytes());
    hex::encode(h.finalize())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value with the flags every cookie here has.
fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> Result<HeaderValue, WebError> {
    let age = max_age
        .map(|s| format!("; Max-Age={s}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{age}"
    ))
    .map_err(|_| WebError::BadRequest("cookie value is not valid text".into()))
}

/// The signed-in user, or `None` when the cookie is absent, unknown or expired.
pub async fn signed_in(
    state: &WebState,
    headers: &HeaderMap,
) -> Result<Option<SignedIn>, WebError> {
    let Some(value) = cookie(headers, SESSION_COOKIE).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ticket = Secret::new(value.to_string());
    match state
        .issuer
        .authenticate(&Credentials::Ticket(ticket.clone()))
        .await
    {
        Ok(user) => Ok(Some(SignedIn {
            user: user.clone(),
            ticket,
        })),
        Err(IssuerError::Unauthenticated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The signed-in user, or [`WebError::SignedOut`].
pub async fn require(state: &WebState, headers: &HeaderMap) -> Result<SignedIn, WebError> {
    signed_in(state, headers).await?.ok_or(WebError::SignedOut)
}

/// The sign-in page with a fresh double-submit token (and its cookie).
pub fn sign_in_page(status: StatusCode, error: Option<&str>) -> Response {
    let mut raw = [0u8; 16];
    token::fill(&mut raw);
    let csrf = hex::encode(raw);
    let mut response = (status, html::sign_in_page(&csrf, error)).into_response();
    match set_cookie(LOGIN_COOKIE, &csrf, Some(3600)) {
        Ok(v) => {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        Err(e) => return e.into_response(),
    }
    response
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: Secret<String>,
    #[serde(default)]
    csrf: String,
}

/// `POST /tracking/login`.
pub async fn login(
    State(state): State<WebState>,
    peer: Peer,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, WebError> {
    if !same_origin(&uri, &headers) {
        return Err(WebError::CrossOrigin);
    }
    let Form(form) = form.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(form.csrf.as_bytes())) {
        return Err(WebError::Csrf);
    }
    let source = peer.0.map(|a| a.ip().to_string());
    match state
        .issuer
        .login(form.username.trim(), form.password, source)
        .await
    {
        Ok(ticket) => {
            let mut response = Redirect::to("/tracking").into_response();
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, ticket.expose(), None)?,
            );
            h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", Some(0))?);
            Ok(response)
        }
        Err(IssuerError::Unauthenticated) => Ok(sign_in_page(
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password."),
        )),
        Err(e) => Err(e.into()),
    }
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /tracking/logout`: deletes the ticket and the cookie.
pub async fn logout(
    State(state): State<WebState>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Result<Response, WebError> {
    if !same_origin(&uri, &headers) {
        return Err(WebError::CrossOrigin);
    }
    let Form(form) = form.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let me = require(&state, &headers).await?;
    me.check_csrf(&form.csrf)?;
    state.issuer.logout(&me.ticket, &me.user.name).await?;
    let mut response = Redirect::to("/tracking").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0))?);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-sallyport=t0k"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("t0k"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }

    #[test]
    fn csrf_depends_on_the_ticket() {
        let a = csrf_for(&Secret::new("ticket-a".into()));
        let b = csrf_for(&Secret::new("ticket-b".into()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(!a.contains("ticket"));
    }
}
