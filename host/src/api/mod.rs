//! The REST API: routes, authentication and the one error type every handler returns.
//!
//! [`router`] builds the whole `axum` router from an [`AppState`]; tests drive it with `oneshot`
//! and the server serves it over HTTPS. Every error is JSON `{"error", "message"}` with the
//! right status, and internal failures are logged but never shown.

mod error;
mod extract;
mod meta;
mod opensession;
mod removals;
mod session;
mod tracking;
mod transient;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

pub use error::ApiError;
pub(crate) use extract::Peer;

use crate::issuer::Issuer;
use crate::metrics::{Metrics, RouteLabel};

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub issuer: Arc<Issuer>,
    pub metrics: Arc<Metrics>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/Session",
            post(session::login).delete(session::logout),
        )
        .route("/api/v1/opensession", post(opensession::open))
        .route("/api/v1/tracking/opensessions", get(tracking::list))
        .route(
            "/api/v1/tracking/opensessions/terminate",
            post(tracking::terminate),
        )
        .route(
            "/control-plane/{site_id}/transient-accesses",
            post(transient::create),
        )
        .route("/sites/{site_id}/transient-accesses", get(transient::list))
        .route(
            "/sites/{site_id}/transient-accesses/{access_id}",
            get(transient::get).delete(transient::revoke),
        )
        .route("/sites/{site_id}/pending-removals", get(removals::list))
        .route("/openapi.json", get(meta::openapi))
        .route("/healthz", get(meta::healthz))
        .route("/metrics", get(meta::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(extract::BODY_LIMIT))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// Records request latency per route (the matched pattern, so ids do not explode the labels).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let response = next.run(req).await;
    state
        .metrics
        .request_seconds
        .get_or_create(&RouteLabel {
            method,
            route,
            status: response.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    response
}

pub use meta::ApiDoc;
