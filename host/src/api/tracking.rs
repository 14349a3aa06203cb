//! `GET /api/v1/tracking/opensessions` and `POST /api/v1/tracking/opensessions/terminate`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Caller, Peer};
use super::{ApiError, AppState};
use crate::audit::now_ms;
use crate::config::AccessLevel;
use crate::store::{OpenSession, SessionState};

/// One open session on the tracking list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: String,
    pub user: String,
    pub device: String,
    /// `generated` until the key is used, then `initiated`; `expired` or `terminated` at the end.
    pub state: SessionState,
    pub requested_by: String,
    #[schema(value_type = String)]
    pub access: AccessLevel,
    pub created_at: String,
    pub expires_at: String,
    pub initiated_at: Option<String>,
    pub ended_at: Option<String>,
    /// Address the key was redeemed from.
    pub source: Option<String>,
}

/// RFC 3339 UTC with milliseconds, as the Altostrat API writes timestamps.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).unwrap_or_default()
}

impl SessionView {
    pub fn from_session(s: OpenSession, now: i64) -> Self {
        // The sweeper runs every few hundred ms; never show a dead key as usable meanwhile.
        let state = match s.state {
            SessionState::Generated if s.expires_at <= now => SessionState::Expired,
            other => other,
        };
        Self {
            id: s.id,
            user: s.user,
            device: s.device,
            state,
            requested_by: s.requested_by,
            access: s.access,
            created_at: rfc3339(s.created_at),
            expires_at: rfc3339(s.expires_at),
            initiated_at: s.initiated_at.map(rfc3339),
            ended_at: s.ended_at.map(rfc3339),
            source: s.source,
        }
    }
}

/// Open sessions: all of them for sudo users, otherwise the caller's own.
#[utoipa::path(get, path = "/api/v1/tracking/opensessions",
    responses((status = 200, body = Vec<SessionView>), (status = 401, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let now = now_ms();
    let sessions = state.issuer.list_sessions(&caller.user).await?;
    Ok(Json(
        sessions
            .into_iter()
            .map(|s| SessionView::from_session(s, now))
            .collect(),
    ))
}

/// Terminate body: comma-separated session ids.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TerminateBody {
    pub sessions: String,
}

/// The sessions that were live and are now terminated.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TerminateResponse {
    pub terminated: Vec<String>,
}

/// Terminate sessions (revoking unused keys and cutting live connections).
#[utoipa::path(post, path = "/api/v1/tracking/opensessions/terminate", request_body = TerminateBody,
    responses((status = 200, body = TerminateResponse), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    ApiJson(body): ApiJson<TerminateBody>,
) -> Result<Json<TerminateResponse>, ApiError> {
    let terminated = state
        .issuer
        .terminate(&caller.user, &body.sessions, peer.ip())
        .await?;
    Ok(Json(TerminateResponse { terminated }))
}
