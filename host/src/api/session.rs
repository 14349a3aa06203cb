//! `POST /api/v1/Session` (login → ticket) and `DELETE /api/v1/Session` (logout).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Caller, Peer};
use super::{ApiError, AppState};
use crate::issuer::Credentials;
use crate::secret::Secret;

/// Login body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginBody {
    pub username: String,
    #[schema(value_type = String)]
    pub password: Secret<String>,
}

/// A login ticket for the `ticket` header or `Authorization: Bearer`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub session: String,
}

/// Exchange a username and password for a ticket.
#[utoipa::path(post, path = "/api/v1/Session", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 415, body = super::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    peer: Peer,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<LoginResponse>, ApiError> {
    let ticket = state
        .issuer
        .login(&body.username, body.password, peer.ip())
        .await?;
    Ok(Json(LoginResponse {
        session: ticket.expose().clone(),
    }))
}

/// Invalidate the ticket used to call this.
#[utoipa::path(delete, path = "/api/v1/Session",
    responses((status = 200, description = "logged out"), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    match &caller.credentials {
        Credentials::Ticket(t) | Credentials::Bearer(t) => {
            state.issuer.logout(t, &caller.user.name).await?
        }
        Credentials::ApiKey { .. } => {
            return Err(ApiError::BadRequest(
                "logout needs a ticket; API keys are not sessions".into(),
            ));
        }
    }
    Ok(Json(serde_json::json!({ "status": "logged out" })))
}
