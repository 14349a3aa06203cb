//! Altostrat transient accesses: create (`POST /control-plane/{siteId}/transient-accesses`),
//! get, list and revoke (`/sites/{siteId}/transient-accesses[/{accessId}]`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath, Caller, Peer};
use super::tracking::rfc3339;
use super::{ApiError, AppState};
use crate::audit::now_ms;
use crate::issuer::humanize::{self, Lang};
use crate::issuer::{Issuer, NewTransient};
use crate::store::{TransientAccess, TransientKind};

/// Creation body, as in the Altostrat API.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreateBody {
    /// Minutes until the access is revoked automatically, 15..=1440.
    pub expire_after_minutes: i64,
    #[serde(rename = "type")]
    pub kind: TransientKind,
    #[serde(default)]
    pub full_access: bool,
    #[serde(default)]
    pub allow_rfc1918: bool,
    /// The only source CIDR allowed to connect, e.g. `203.0.113.42/32`.
    pub allow_only_cidr: Option<String>,
}

/// A transient access, every field of the Altostrat object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransientView {
    pub id: uuid::Uuid,
    pub username: String,
    pub password: String,
    pub port: u16,
    #[serde(rename = "type")]
    pub kind: TransientKind,
    pub full_access: bool,
    pub allow_rfc1918: bool,
    pub allow_only_cidr: Option<String>,
    pub revoked_early: bool,
    pub expires_at: String,
    pub expired: bool,
    pub entry_point: String,
    /// In the language of `Accept-Language` (English and Spanish).
    pub time_to_expire: String,
    pub onclick: String,
}

impl TransientView {
    fn build(issuer: &Issuer, a: TransientAccess, lang: Lang) -> Result<Self, ApiError> {
        let now = now_ms();
        let password = issuer.transient_password(&a)?.expose().clone();
        let host = issuer.public_host().to_string();
        let onclick = match a.kind {
            TransientKind::Winbox => format!(
                "winbox://{host}:{}?username={}&password={password}",
                a.port, a.username
            ),
            TransientKind::Ssh => format!("ssh://{}@{host}:{}", a.username, a.port),
        };
        // An access revoked early expired when it was revoked: both fields say so, rather than
        // a time still ahead next to `expired: true`.
        let expires_at = match a.ended_at {
            Some(ended) if a.revoked_early => ended.min(a.expires_at),
            _ => a.expires_at,
        };
        Ok(Self {
            id: a.id,
            time_to_expire: humanize::time_to_expire(expires_at - now, lang),
            expired: a.expired || a.expires_at <= now,
            username: a.username,
            password,
            port: a.port,
            kind: a.kind,
            full_access: a.full_access,
            allow_rfc1918: a.allow_rfc1918,
            allow_only_cidr: a.allow_only_cidr,
            revoked_early: a.revoked_early,
            expires_at: rfc3339(expires_at),
            entry_point: host,
            onclick,
        })
    }
}

fn lang(headers: &HeaderMap) -> Lang {
    humanize::negotiate(
        headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Create a transient access on a site (device).
#[utoipa::path(post, path = "/control-plane/{site_id}/transient-accesses", request_body = CreateBody,
    params(("site_id" = uuid::Uuid, Path, description = "The device id")),
    responses((status = 201, body = TransientView), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
              (status = 404, body = super::error::ErrorBody), (status = 502, body = super::error::ErrorBody),
              (status = 503, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    headers: HeaderMap,
    ApiPath(site): ApiPath<uuid::Uuid>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<TransientView>), ApiError> {
    let new = NewTransient {
        expire_after_minutes: body.expire_after_minutes,
        kind: body.kind,
        full_access: body.full_access,
        allow_rfc1918: body.allow_rfc1918,
        allow_only_cidr: body.allow_only_cidr,
    };
    let a = state
        .issuer
        .create_transient(&caller.user, site, new, peer.ip())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TransientView::build(&state.issuer, a, lang(&headers))?),
    ))
}

/// Get one transient access.
#[utoipa::path(get, path = "/sites/{site_id}/transient-accesses/{access_id}",
    params(("site_id" = uuid::Uuid, Path), ("access_id" = uuid::Uuid, Path)),
    responses((status = 200, body = TransientView), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath((site, id)): ApiPath<(uuid::Uuid, uuid::Uuid)>,
) -> Result<Json<TransientView>, ApiError> {
    let a = state.issuer.transient(&caller.user, site, id).await?;
    Ok(Json(TransientView::build(
        &state.issuer,
        a,
        lang(&headers),
    )?))
}

/// List a site's transient accesses (all for sudo users, otherwise the caller's own).
#[utoipa::path(get, path = "/sites/{site_id}/transient-accesses",
    params(("site_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Vec<TransientView>), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(site): ApiPath<uuid::Uuid>,
) -> Result<Json<Vec<TransientView>>, ApiError> {
    let lang = lang(&headers);
    let all = state.issuer.list_transients(&caller.user, site).await?;
    let views = all
        .into_iter()
        .map(|a| TransientView::build(&state.issuer, a, lang))
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
}

/// Revoke a transient access before it expires.
#[utoipa::path(delete, path = "/sites/{site_id}/transient-accesses/{access_id}",
    params(("site_id" = uuid::Uuid, Path), ("access_id" = uuid::Uuid, Path)),
    responses((status = 200, body = TransientView), (status = 400, body = super::error::ErrorBody),
              (status = 401, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    peer: Peer,
    headers: HeaderMap,
    ApiPath((site, id)): ApiPath<(uuid::Uuid, uuid::Uuid)>,
) -> Result<Json<TransientView>, ApiError> {
    let a = state
        .issuer
        .revoke_transient(&caller.user, site, id, peer.ip())
        .await?;
    Ok(Json(TransientView::build(
        &state.issuer,
        a,
        lang(&headers),
    )?))
}
