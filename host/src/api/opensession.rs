//! `POST /api/v1/opensession`: a Nodegrid one-time key for a user on a device.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Caller, Peer};
use super::{ApiError, AppState};
use crate::issuer::DurationInput;

/// Request body, as in the Nodegrid API.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OpenSessionBody {
    /// Name of a managed device.
    pub target_device: String,
    /// The user the key is for; another user than the caller needs sudo.
    pub user: String,
    /// Seconds until the key expires (default 10). An integer or a numeric string (`"600"`).
    #[schema(value_type = Option<String>, example = "600")]
    pub duration: Option<DurationInput>,
}

/// The one-time key: 32 lower-case hex characters, usable once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenSessionResponse {
    pub session_token: String,
}

/// Issue a one-time key (OTK) for `ssh user:device@gateway` or the web console.
#[utoipa::path(post, path = "/api/v1/opensession", request_body = OpenSessionBody,
    responses((status = 200, body = OpenSessionResponse), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody)))]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    ApiJson(body): ApiJson<OpenSessionBody>,
) -> Result<Json<OpenSessionResponse>, ApiError> {
    let otk = state
        .issuer
        .issue_session(
            &caller.user,
            &body.target_device,
            &body.user,
            body.duration.as_ref(),
            peer.ip(),
        )
        .await?;
    Ok(Json(OpenSessionResponse {
        session_token: otk.expose().clone(),
    }))
}
