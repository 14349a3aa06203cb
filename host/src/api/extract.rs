//! Extractors that turn every rejection into an [`ApiError`]: JSON bodies, path ids, the
//! caller's identity and the peer address.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};
use crate::directory::User;
use crate::issuer::Credentials;
use crate::secret::Secret;

/// The largest request body the API reads (axum's default, stated here so the 413 can say it).
pub const BODY_LIMIT: usize = 2 << 20;

/// How long a client may take to send a request body. Headers have their own limit (see
/// `crate::http_conn`); this one stops a body trickled a byte at a time from holding the
/// connection and its handler forever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON body; malformed JSON and wrong types are 400, a missing JSON content type 415, a
/// body over the size limit 413, one not sent within [`BODY_TIMEOUT`] 408.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json".into(),
            ));
        }
        let read = axum::body::Bytes::from_request(req, state);
        let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, read).await else {
            return Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            )));
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge(format!(
                    "request body over {BODY_LIMIT} bytes"
                )));
            }
            Err(e) => {
                return Err(ApiError::BadRequest(format!(
                    "unreadable request body: {e}"
                )));
            }
        };
        // Every body the API takes is an object; serde would read an array as the fields in
        // order and blame an element, which explains nothing.
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            None => {
                return Err(ApiError::BadRequest(
                    "the request body is empty: send a JSON object".into(),
                ));
            }
            Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
                return Err(ApiError::BadRequest(
                    "the request body must be a JSON object ({ … })".into(),
                ));
            }
            Some(_) => {}
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::BadRequest(format!(
                "malformed JSON: {}",
                inner(&e)
            ))),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::BadRequest(format!(
                "invalid request body: {}",
                inner(&e)
            ))),
            // Sizes were handled when the bytes were read; nothing else is left.
            Err(e) => Err(ApiError::BadRequest(format!("invalid request body: {e}"))),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or `application/…+json`), as
/// axum's own `Json` extractor decides.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|e| {
            e == "application/json" || (e.starts_with("application/") && e.ends_with("+json"))
        })
}

/// serde's own message (e.g. "missing field `user` at line 1 column 20"), without axum's prefix.
fn inner(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Path parameters; a malformed id (e.g. not a UUID) is 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::BadRequest(
                format!("invalid path parameter: {}", e.body_text()),
            )),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The connecting address, when the server recorded one.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    pub fn ip(&self) -> Option<String> {
        self.0.map(|a| a.ip().to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// An authenticated caller: `ticket` header, `username` + `api_key` headers, or
/// `Authorization: Bearer <ticket or api key>`.
#[derive(Debug)]
pub struct Caller {
    pub user: User,
    pub credentials: Credentials,
}

fn header(parts: &Parts, name: &str) -> Result<Option<String>, ApiError> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim().to_string()))
            .map_err(|_| ApiError::Unauthorized(format!("header {name} is not valid text"))),
    }
}

fn credentials(parts: &Parts) -> Result<Credentials, ApiError> {
    if let Some(t) = header(parts, "ticket")? {
        return Ok(Credentials::Ticket(Secret::new(t)));
    }
    if let Some(key) = header(parts, "api_key")? {
        let user = header(parts, "username")?
            .ok_or_else(|| ApiError::Unauthorized("api_key needs a username header".into()))?;
        return Ok(Credentials::ApiKey {
            user,
            key: Secret::new(key),
        });
    }
    if let Some(auth) = header(parts, "authorization")? {
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization must be \"Bearer <token>\"".into())
            })?;
        return Ok(Credentials::Bearer(Secret::new(token.trim().to_string())));
    }
    Err(ApiError::Unauthorized(
        "missing credentials: send a ticket header, username and api_key headers, or Authorization: Bearer".into(),
    ))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credentials = credentials(parts)?;
        let user = state.issuer.authenticate(&credentials).await?.clone();
        Ok(Self { user, credentials })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::routing::post;
    use futures_util::StreamExt;
    use tower::ServiceExt;

    fn app() -> Router {
        Router::new()
            .route(
                "/",
                post(|ApiJson(v): ApiJson<serde_json::Value>| async move { axum::Json(v) }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
    }

    fn json_post(body: Body) -> Request {
        Request::post("/")
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_is_a_408_after_the_body_timeout() {
        let started = tokio::time::Instant::now();
        let stalled = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"{\"user"))
        })
        .chain(futures_util::stream::pending());
        let resp = app()
            .oneshot(json_post(Body::from_stream(stalled)))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() >= BODY_TIMEOUT);
    }

    #[tokio::test]
    async fn sizes_up_to_the_limit_are_read_and_larger_ones_are_413() {
        let fits = format!("{{\"a\":\"{}\"}}", "a".repeat(BODY_LIMIT - 8));
        assert_eq!(fits.len(), BODY_LIMIT);
        let resp = app().oneshot(json_post(Body::from(fits))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let over = format!("{{\"a\":\"{}\"}}", "a".repeat(BODY_LIMIT));
        let resp = app().oneshot(json_post(Body::from(over))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    async fn message(resp: axum::response::Response) -> (StatusCode, String) {
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            status,
            v["message"].as_str().unwrap_or_default().to_string(),
        )
    }

    #[tokio::test]
    async fn only_a_json_object_is_a_request_body() {
        for (body, needle) in [
            ("[1,2]", "must be a JSON object"),
            (" \"text\"", "must be a JSON object"),
            ("42", "must be a JSON object"),
            ("", "is empty"),
            ("  \n", "is empty"),
            ("{\"a\":", "malformed JSON"),
            ("[1,", "malformed JSON"),
        ] {
            let resp = app().oneshot(json_post(Body::from(body))).await.unwrap();
            let (status, msg) = message(resp).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {msg}");
            assert!(msg.contains(needle), "{body:?}: {msg}");
        }
        let resp = app()
            .oneshot(
                Request::post("/")
                    .header(
                        "content-type",
                        "application/merge-patch+json; charset=utf-8",
                    )
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = app()
            .oneshot(
                Request::post("/")
                    .header("content-type", "text/plain")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
