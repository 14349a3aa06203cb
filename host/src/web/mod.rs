//! The browser side of the gateway: the direct console and the tracking page.
//!
//! - [`console`]: `/direct/<device>/console#user=…&session_token=…` (Nodegrid seed). A static
//!   page reads the fragment, opens the WebSocket `/direct/<device>/console/ws` and sends the
//!   user and one-time key as its first message; the gateway redeems the key (`source` and
//!   `authorize` hooks with the browser's address, protocol `web-console`), logs in to the
//!   device with the injected credential and bridges the pty both ways.
//! - [`tracking`]: `/tracking`, sessions and transient accesses, live-updating, with terminate.
//! - [`auth`]: the tracking page's cookie session (a login ticket in an `HttpOnly; Secure;
//!   SameSite=Strict` cookie) and CSRF tokens.
//! - [`live`]: live consoles by session, so terminating a session cuts them within a second.
//! - [`assets`]: the pages, scripts and the vendored xterm.js, embedded in the binary.
//!
//! Pages carry a strict Content-Security-Policy (scripts only from `/assets`, no inline
//! script) and are never cached; nothing here logs a key, password or cookie.

mod assets;
mod auth;
mod console;
mod html;
mod live;
#[cfg(test)]
mod tests;
mod tracking;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::broadcast;

use crate::issuer::{Issuer, IssuerError, Lifecycle};
use crate::ssh::SshService;

/// Why a page or form request failed; each variant has one status and a plain message.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("you are not signed in, or your sign-in has expired")]
    SignedOut,
    #[error("this form has expired or did not come from this page; reload the page and try again")]
    Csrf,
    #[error("requests from other sites are refused")]
    CrossOrigin,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Issuer(#[from] IssuerError),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            Self::SignedOut => StatusCode::UNAUTHORIZED,
            Self::Csrf | Self::CrossOrigin => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Issuer(e) => match e {
                IssuerError::Invalid(_) => StatusCode::BAD_REQUEST,
                IssuerError::Unauthenticated => StatusCode::UNAUTHORIZED,
                IssuerError::Denied(_) | IssuerError::Refused => StatusCode::FORBIDDEN,
                IssuerError::NotFound(_) => StatusCode::NOT_FOUND,
                IssuerError::Conflict(_) => StatusCode::CONFLICT,
                IssuerError::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
                IssuerError::BadGateway(_) => StatusCode::BAD_GATEWAY,
                IssuerError::Store(_) | IssuerError::Seal(_) | IssuerError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// The message shown to the user: internal failures are logged, never shown.
    fn public_message(&self) -> String {
        if self.status() == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "web request failed");
            return "internal error; the gateway log has the details".into();
        }
        self.to_string()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        (status, html::error_page(status, &message)).into_response()
    }
}

/// What the web handlers share.
#[derive(Clone)]
pub struct WebState {
    issuer: Arc<Issuer>,
    ssh: Arc<SshService>,
    consoles: Arc<live::Consoles>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState").finish_non_exhaustive()
    }
}

impl WebState {
    pub fn new(issuer: Arc<Issuer>, ssh: Arc<SshService>) -> Self {
        Self {
            issuer,
            ssh,
            consoles: Arc::new(live::Consoles::default()),
        }
    }
}

/// The pages, their WebSocket and assets; merge it into the API router (it has no fallback).
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/direct/{device}/console", get(console::page))
        .route("/direct/{device}/console/ws", get(console::upgrade))
        .route("/tracking", get(tracking::page))
        .route("/tracking/sessions", get(tracking::data))
        .route("/tracking/login", post(auth::login))
        .route("/tracking/logout", post(auth::logout))
        .route("/tracking/terminate", post(tracking::terminate))
        .route("/assets/{file}", get(assets::serve))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// The Content-Security-Policy of every page: scripts and styles only from this origin (xterm.js
/// sets inline styles on its own elements, hence `'unsafe-inline'` for styles only), no
/// framing, forms and connections only back to the gateway.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// `Referrer-Policy: same-origin`, not `no-referrer`: with the latter, browsers send
/// `Origin: null` on form posts, which [`same_origin`] would have to refuse.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a request that changes something (a form post, a WebSocket) comes from a page of
/// this gateway: its `Origin`, when the browser sends one, must name the `Host` it was sent
/// to. Browsers always send `Origin` on POST and WebSocket requests; clients without one
/// (curl) are not browsers and carry no ambient credentials to abuse.
/// Over HTTP/2 the host is the URI's authority (there is no `Host` header).
pub(crate) fn same_origin(uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!(authority, Some(a) if !host.is_empty() && a.eq_ignore_ascii_case(host))
}

/// The browser's address, recorded by the server for every connection (the API's extractor).
pub(crate) use crate::api::Peer;

/// Cuts live consoles whose session ends (terminated from REST or the tracking page) until
/// `shutdown` resolves; then cuts every console with a message.
pub async fn watch_lifecycle(state: WebState, shutdown: impl std::future::Future<Output = ()>) {
    let mut events = state.issuer.subscribe();
    tokio::pin!(shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => {
                state.consoles.cut_all("sallyport: the gateway is shutting down");
                return;
            }
            e = events.recv() => e,
        };
        match event {
            Ok(Lifecycle::SessionEnded { id }) => {
                state
                    .consoles
                    .cut(&id, "sallyport: the session was terminated");
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "web console: lifecycle events lagged; rechecking"
                );
                state.consoles.recheck(&state.issuer).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
