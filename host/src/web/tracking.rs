//! `/tracking`: open sessions (Nodegrid *generated* → *initiated* → *expired* / *terminated*)
//! and transient accesses, for a signed-in gateway user — everyone's for sudo users, otherwise
//! their own (the same visibility as the REST API, decided by the issuer). `tracking.js` polls
//! `/tracking/sessions` (JSON) every two seconds to update the table without a reload;
//! terminating is a plain form post with a CSRF token.

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};

use super::auth::{self, SignedIn};
use super::{WebError, WebState, html, same_origin};
use crate::audit::now_ms;
use crate::store::{OpenSession, SessionState, TransientAccess};

/// At most this many rows of each kind are shown (newest first).
const MAX_ROWS: usize = 200;

/// One row of the table, as rendered and as sent to `tracking.js`.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `session` or `transient`: what terminating it means.
    pub kind: &'static str,
    pub id: String,
    /// The site (device id) of a transient access.
    pub site: Option<String>,
    pub user: String,
    pub device: String,
    pub r#type: String,
    pub state: String,
    pub source: String,
    pub started: String,
    /// When it expires, or, once it is over, when it ended (revoked, terminated, closed).
    pub expires: String,
    /// Whether it can still be terminated.
    pub live: bool,
}

impl Row {
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }

    pub fn terminate_label(&self) -> String {
        format!(
            "Terminate the {} of {} on {}",
            self.r#type, self.user, self.device
        )
    }

    fn session(s: OpenSession, now: i64) -> Self {
        // The sweeper runs every few hundred ms; never show a dead key as usable meanwhile.
        let state = match s.state {
            SessionState::Generated if s.expires_at <= now => SessionState::Expired,
            other => other,
        };
        let live = matches!(state, SessionState::Generated | SessionState::Initiated);
        Self {
            kind: "session",
            id: s.id,
            site: None,
            user: s.user,
            device: s.device,
            r#type: "open session".into(),
            state: state_name(state).into(),
            source: s.source.unwrap_or_default(),
            started: s.initiated_at.map(when).unwrap_or_default(),
            // Over: when it ended, as REST's `ended_at` says (an expired key that was never
            // used ended at its expiry).
            expires: match (state, s.ended_at) {
                (SessionState::Initiated, _) => "when terminated".into(),
                (SessionState::Expired | SessionState::Terminated, Some(end)) => when(end),
                _ => when(s.expires_at),
            },
            live,
        }
    }

    fn transient(a: TransientAccess, now: i64) -> Self {
        let (state, live) = if a.revoked_early {
            ("revoked", false)
        } else if a.expired || a.expires_at <= now {
            ("expired", false)
        } else {
            ("active", true)
        };
        let source = match (&a.allow_only_cidr, a.allow_rfc1918) {
            (Some(cidr), _) => format!("only {cidr}"),
            (None, true) => "any".into(),
            (None, false) => "any outside RFC 1918".into(),
        };
        Self {
            kind: "transient",
            id: a.id.to_string(),
            site: Some(a.site_id.to_string()),
            user: a.created_by,
            device: a.device,
            r#type: format!(
                "transient {} ({}, port {})",
                a.kind.as_str(),
                a.username,
                a.port
            ),
            state: state.into(),
            source,
            started: when(a.created_at),
            // A revoked access ended at its revocation, which REST shows as its `expires_at`.
            expires: when(match a.ended_at {
                Some(end) if !live => end.min(a.expires_at),
                _ => a.expires_at,
            }),
            live,
        }
    }
}

fn state_name(s: SessionState) -> &'static str {
    match s {
        SessionState::Generated => "generated",
        SessionState::Initiated => "initiated",
        SessionState::Expired => "expired",
        SessionState::Terminated => "terminated",
    }
}

/// `2025-10-29 12:15:49 UTC`.
fn when(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&fmt).unwrap_or_default()
}

/// The rows the signed-in user may see: sessions, then transient accesses on every device.
async fn rows(state: &WebState, me: &SignedIn) -> Result<Vec<Row>, WebError> {
    let now = now_ms();
    let issuer = &state.issuer;
    let mut rows: Vec<Row> = issuer
        .list_sessions(&me.user)
        .await?
        .into_iter()
        .take(MAX_ROWS)
        .map(|s| Row::session(s, now))
        .collect();
    let mut accesses = Vec::new();
    for device in issuer.directory().devices() {
        accesses.extend(issuer.list_transients(&me.user, device.id).await?);
    }
    accesses.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    rows.extend(
        accesses
            .into_iter()
            .take(MAX_ROWS)
            .map(|a| Row::transient(a, now)),
    );
    Ok(rows)
}

fn sees_all(state: &WebState, me: &SignedIn) -> bool {
    state.issuer.directory().principal(&me.user).sudo
}

/// `?done=` after a form post: only fixed notices, nothing reflected.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    done: Option<String>,
}

/// `GET /tracking`: the table, or the sign-in form.
pub async fn page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<Response, WebError> {
    let Some(me) = auth::signed_in(&state, &headers).await? else {
        return Ok(auth::sign_in_page(StatusCode::OK, None));
    };
    let notice = match q.done.as_deref() {
        Some("session") => Some("The session was terminated."),
        Some("transient") => Some("The transient access was revoked."),
        _ => None,
    };
    let rows = rows(&state, &me).await?;
    Ok(html::tracking_page(
        &me.user.name,
        sees_all(&state, &me),
        &me.csrf(),
        notice,
        &rows,
    )
    .into_response())
}

/// What `tracking.js` polls.
#[derive(Debug, Serialize)]
pub struct Data {
    user: String,
    sees_all: bool,
    rows: Vec<Row>,
}

/// `GET /tracking/sessions`: the rows as JSON (401 when signed out).
pub async fn data(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> Result<Json<Data>, WebError> {
    let me = auth::require(&state, &headers).await?;
    Ok(Json(Data {
        user: me.user.name.clone(),
        sees_all: sees_all(&state, &me),
        rows: rows(&state, &me).await?,
    }))
}

/// The terminate form.
#[derive(Debug, Deserialize)]
pub struct TerminateForm {
    #[serde(default)]
    csrf: String,
    kind: String,
    id: String,
    site: Option<String>,
}

/// `POST /tracking/terminate`: ends a session (cutting its consoles and SSH connections) or
/// revokes a transient access, as the REST calls do, then back to the page.
pub async fn terminate(
    State(state): State<WebState>,
    uri: Uri,
    headers: HeaderMap,
    peer: crate::api::Peer,
    form: Result<Form<TerminateForm>, FormRejection>,
) -> Result<Response, WebError> {
    if !same_origin(&uri, &headers) {
        return Err(WebError::CrossOrigin);
    }
    let Form(form) = form.map_err(|e| WebError::BadRequest(e.body_text()))?;
    let me = auth::require(&state, &headers).await?;
    me.check_csrf(&form.csrf)?;
    match form.kind.as_str() {
        "session" => {
            if form.id.contains(',') {
                return Err(WebError::BadRequest("one session at a time".into()));
            }
            state
                .issuer
                .terminate(&me.user, &form.id, peer.ip())
                .await?;
        }
        "transient" => {
            let parse = |s: &str| {
                uuid::Uuid::parse_str(s)
                    .map_err(|_| WebError::BadRequest(format!("not an id: {s:?}")))
            };
            let site = parse(form.site.as_deref().unwrap_or_default())?;
            state
                .issuer
                .revoke_transient(&me.user, site, parse(&form.id)?, peer.ip())
                .await?;
        }
        other => return Err(WebError::BadRequest(format!("unknown kind {other:?}"))),
    }
    Ok(Redirect::to(&format!("/tracking?done={}", form.kind)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TransientKind;

    fn access(expires_at: i64, ended_at: Option<i64>, revoked: bool) -> TransientAccess {
        TransientAccess {
            id: uuid::Uuid::nil(),
            site_id: uuid::Uuid::nil(),
            device: "d".into(),
            created_by: "u".into(),
            username: "transient-x".into(),
            password_hash: Default::default(),
            password_sealed: Vec::new(),
            port: 1,
            kind: TransientKind::Winbox,
            full_access: false,
            allow_rfc1918: false,
            allow_only_cidr: None,
            created_at: 0,
            expires_at,
            expired: ended_at.is_some(),
            revoked_early: revoked,
            ended_at,
        }
    }

    #[test]
    fn an_ended_row_shows_when_it_ended() {
        let hour = 3_600_000;
        let revoked = Row::transient(access(2 * hour, Some(hour), true), hour + 5);
        assert_eq!(
            (revoked.state.as_str(), revoked.expires),
            ("revoked", when(hour))
        );
        let live = Row::transient(access(2 * hour, None, false), hour);
        assert_eq!(live.expires, when(2 * hour));
        assert_eq!(live.source, "any outside RFC 1918");
        let session = OpenSession {
            id: "s".into(),
            token_hash: Default::default(),
            user: "u".into(),
            device: "d".into(),
            requested_by: "u".into(),
            access: crate::config::AccessLevel::Full,
            state: SessionState::Terminated,
            created_at: 0,
            expires_at: 2 * hour,
            initiated_at: Some(10),
            ended_at: Some(hour),
            source: None,
        };
        assert_eq!(Row::session(session, hour + 5).expires, when(hour));
    }
}
