//! `GET /sites/{siteId}/pending-removals`: device-side users of transient accesses that are over
//! but could not be removed from the device yet (it was unreachable); the gateway keeps retrying
//! with backoff, and a row disappears once the device confirmed the removal.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::extract::{ApiPath, Caller};
use super::tracking::rfc3339;
use super::{ApiError, AppState};

/// One device user still to be removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingRemoval {
    /// The device-side username (the access's `username`).
    pub username: String,
    pub access_id: uuid::Uuid,
    pub device: String,
    /// Failed removal attempts so far.
    pub attempts: u32,
    pub next_attempt_at: String,
    pub last_error: Option<String>,
}

/// List device users whose removal is pending (all for sudo users, otherwise the caller's own).
#[utoipa::path(get, path = "/sites/{site_id}/pending-removals",
    params(("site_id" = uuid::Uuid, Path, description = "The device id")),
    responses((status = 200, body = Vec<PendingRemoval>), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(site): ApiPath<uuid::Uuid>,
) -> Result<Json<Vec<PendingRemoval>>, ApiError> {
    let rows = state.issuer.pending_removals(&caller.user, site).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| PendingRemoval {
                username: r.username,
                access_id: r.access_id,
                device: r.device,
                attempts: r.attempts,
                next_attempt_at: rfc3339(r.next_attempt_at),
                last_error: r.last_error,
            })
            .collect(),
    ))
}
