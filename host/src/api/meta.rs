//! `/healthz`, `/metrics` (Prometheus) and `/openapi.json` (generated from the handlers).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::{ApiError, AppState};

/// The OpenAPI document, assembled from the `#[utoipa::path]` annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sallyport",
        description = "Access gateway for managed network devices"
    ),
    paths(
        super::session::login,
        super::session::logout,
        super::opensession::open,
        super::tracking::list,
        super::tracking::terminate,
        super::transient::create,
        super::transient::get,
        super::transient::list,
        super::transient::revoke,
        super::removals::list,
        healthz,
    ),
    components(schemas(super::error::ErrorBody))
)]
pub struct ApiDoc;

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render().map_err(|e| {
        tracing::error!(error = %e, "cannot render metrics");
        ApiError::Internal
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
