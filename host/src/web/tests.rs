//! Router-level tests of the web pages (`oneshot`, no sockets): cookie flags, CSRF and
//! same-origin refusals, who sees what on the tracking page, headers and assets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::{WebState, router};
use crate::config::Config;
use crate::server::Gateway;
use crate::store::SessionState;

const CONFIG: &str = r#"
[server]
data_dir = "DATA"
api_listen = "127.0.0.1:0"
ssh_listen = "127.0.0.1:0"

[[groups]]
name = "admins"
sudo = true
devices = ["*"]
access = "full"

[[groups]]
name = "ops"
devices = ["edge-*", "core-*"]
access = "read-only"

[[users]]
name = "admin"
password = "admin-pw"
groups = ["admins"]

[[users]]
name = "alice"
password = "alice-pw"
groups = ["ops"]

[[users]]
name = "bob"
password = "bob-pw"
groups = ["ops"]

[[devices]]
name = "edge-1"
id = "d290f1ee-6c54-4b01-90e6-d701748f0851"
ssh = "127.0.0.1:1"
# Nothing listens there; SSH accesses need a credential of their level to be made at all.
credentials.read_only = { user = "viewer", password = "viewer-pw" }

[[devices]]
name = "core-1"
id = "0b6f6a52-3f0e-4c7e-9a52-1d0c6c7b8e01"
ssh = "127.0.0.1:1"
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    gateway: Gateway,
    app: Router,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = CONFIG.replace("DATA", &data.display().to_string());
    let config = Config::parse(&text, &tmp.path().join("sallyport.toml")).unwrap();
    let (gateway, _) = Gateway::open(config).unwrap();
    let app = router(WebState::new(gateway.issuer.clone(), gateway.ssh.clone()));
    Fixture {
        _tmp: tmp,
        gateway,
        app,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    /// The value a `Set-Cookie` gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies().iter().find_map(|c| {
            let (k, rest) = c.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or_default().to_string())
        })
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(path).header(header::HOST, "gw.test");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, origin: &str, form: &str) -> Request<Body> {
    let mut b = Request::post(path)
        .header(header::HOST, "gw.test")
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(form.to_string())).unwrap()
}

const SAME: &str = "https://gw.test";

/// Signs in through the form; returns the `Cookie` header value and the page's CSRF token.
async fn sign_in(app: &Router, user: &str, password: &str) -> (String, String) {
    let page = send(app, get("/tracking", None)).await;
    let login = page.cookie(super::auth::LOGIN_COOKIE).unwrap();
    let r = send(
        app,
        post(
            "/tracking/login",
            Some(&format!("{}={login}", super::auth::LOGIN_COOKIE)),
            SAME,
            &format!("username={user}&password={password}&csrf={login}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let ticket = r.cookie(super::auth::SESSION_COOKIE).unwrap();
    let cookie = format!("{}={ticket}", super::auth::SESSION_COOKIE);
    let page = send(app, get("/tracking", Some(&cookie))).await;
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

/// Issues a one-time key for `user` on `device` as admin; returns the session id.
async fn issue(f: &Fixture, user: &str, device: &str) -> String {
    let issuer = &f.gateway.issuer;
    let admin = issuer.directory().user("admin").unwrap().clone();
    issuer
        .issue_session(&admin, device, user, None, None)
        .await
        .unwrap();
    let sessions = issuer.list_sessions(&admin).await.unwrap();
    sessions
        .into_iter()
        .find(|s| s.user == user && s.device == device)
        .unwrap()
        .id
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_secure_cookie() {
    let f = fixture();
    let page = send(&f.app, get("/tracking", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<label for=\"username\">Username</label>")
    );
    assert!(
        page.body
            .contains("<label for=\"password\">Password</label>")
    );
    let csp = page.headers.get(header::CONTENT_SECURITY_POLICY).unwrap();
    assert!(csp.to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(page.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    for c in page.cookies() {
        assert!(c.contains("HttpOnly; Secure; SameSite=Strict"), "{c}");
    }

    // A wrong password: 401, the form again, no session cookie.
    let login = page.cookie(super::auth::LOGIN_COOKIE).unwrap();
    let login_cookie = format!("{}={login}", super::auth::LOGIN_COOKIE);
    let bad = send(
        &f.app,
        post(
            "/tracking/login",
            Some(&login_cookie),
            SAME,
            &format!("username=admin&password=nope&csrf={login}"),
        ),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("Invalid username or password"));
    assert!(bad.cookie(super::auth::SESSION_COOKIE).is_none());

    let good = send(
        &f.app,
        post(
            "/tracking/login",
            Some(&login_cookie),
            SAME,
            &format!("username=admin&password=admin-pw&csrf={login}"),
        ),
    )
    .await;
    assert_eq!(good.status, StatusCode::SEE_OTHER);
    assert_eq!(good.headers.get(header::LOCATION).unwrap(), "/tracking");
    let session = good
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-sallyport="))
        .unwrap();
    assert!(
        session.ends_with("; Path=/; HttpOnly; Secure; SameSite=Strict"),
        "{session}"
    );

    // Signing out clears the cookie and ends the ticket.
    let (cookie, csrf) = sign_in(&f.app, "admin", "admin-pw").await;
    let out = send(
        &f.app,
        post(
            "/tracking/logout",
            Some(&cookie),
            SAME,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.cookie(super::auth::SESSION_COOKIE).as_deref(), Some(""));
    let data = send(&f.app, get("/tracking/sessions", Some(&cookie))).await;
    assert_eq!(data.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_or_origin_are_refused() {
    let f = fixture();
    // Sign-in without the double-submit cookie, or with a token that does not match it.
    let r = send(
        &f.app,
        post(
            "/tracking/login",
            None,
            SAME,
            "username=admin&password=admin-pw&csrf=x",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &f.app,
        post(
            "/tracking/login",
            Some("__Host-sallyport-login=abc"),
            SAME,
            "username=admin&password=admin-pw&csrf=abd",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let id = issue(&f, "alice", "edge-1").await;
    let (cookie, csrf) = sign_in(&f.app, "admin", "admin-pw").await;
    let state = || async {
        f.gateway
            .issuer
            .store()
            .session(&id)
            .await
            .unwrap()
            .unwrap()
            .state
    };
    for (origin, token) in [
        (SAME, "0".repeat(64)),
        (SAME, String::new()),
        ("https://evil.example", csrf.clone()),
        ("null", csrf.clone()),
    ] {
        let r = send(
            &f.app,
            post(
                "/tracking/terminate",
                Some(&cookie),
                origin,
                &format!("csrf={token}&kind=session&id={id}"),
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin} {token}");
        assert_eq!(state().await, SessionState::Generated);
    }
    let r = send(
        &f.app,
        post("/tracking/logout", Some(&cookie), SAME, "csrf=wrong"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The right token from this origin terminates.
    let r = send(
        &f.app,
        post(
            "/tracking/terminate",
            Some(&cookie),
            SAME,
            &format!("csrf={csrf}&kind=session&id={id}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(state().await, SessionState::Terminated);
    // Each sign-in has its own token.
    let (_, other) = sign_in(&f.app, "admin", "admin-pw").await;
    assert_ne!(other, csrf);
}

#[tokio::test]
async fn sudo_users_see_every_session_and_others_their_own() {
    let f = fixture();
    let alices = issue(&f, "alice", "edge-1").await;
    let bobs = issue(&f, "bob", "core-1").await;
    let rows = |body: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };

    let (admin, _) = sign_in(&f.app, "admin", "admin-pw").await;
    let all = send(&f.app, get("/tracking/sessions", Some(&admin))).await;
    assert_eq!(all.status, StatusCode::OK);
    let ids = rows(&all.body);
    assert!(ids.contains(&alices) && ids.contains(&bobs), "{ids:?}");
    assert!(all.body.contains("\"sees_all\":true"));

    let (alice, alice_csrf) = sign_in(&f.app, "alice", "alice-pw").await;
    let own = send(&f.app, get("/tracking/sessions", Some(&alice))).await;
    assert_eq!(rows(&own.body), vec![alices.clone()]);
    let page = send(&f.app, get("/tracking", Some(&alice))).await;
    assert!(page.body.contains("your own sessions"));
    assert!(!page.body.contains(&bobs));
    assert!(
        page.body
            .contains("<span class=\"state state-generated\">generated</span>")
    );

    // Alice cannot terminate Bob's session: it does not exist for her.
    let r = send(
        &f.app,
        post(
            "/tracking/terminate",
            Some(&alice),
            SAME,
            &format!("csrf={alice_csrf}&kind=session&id={bobs}"),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let bob = f
        .gateway
        .issuer
        .store()
        .session(&bobs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.state, SessionState::Generated);

    // Signed out: the JSON is 401, the page is the sign-in form.
    let r = send(&f.app, get("/tracking/sessions", None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&f.app, get("/tracking", Some("__Host-sallyport=forged"))).await;
    assert!(r.body.contains("Sign in"));
}

#[tokio::test]
async fn console_page_and_embedded_assets_are_served() {
    let f = fixture();
    let page = send(&f.app, get("/direct/edge-1/console", None)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<script src=\"/assets/xterm.js\" defer></script>")
    );
    assert!(!page.body.contains("<script>"), "inline script");
    let js = send(&f.app, get("/assets/xterm.js", None)).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/javascript; charset=utf-8"
    );
    assert!(js.body.contains("Terminal"));
    let licence = send(&f.app, get("/assets/LICENSE-xterm.txt", None)).await;
    assert!(licence.body.contains("xterm.js authors"));
    assert_eq!(
        send(&f.app, get("/assets/../Cargo.toml", None))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Not a WebSocket handshake, or one from another site: refused, not a crash.
    let r = send(&f.app, get("/direct/edge-1/console/ws", None)).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let ws = Request::get("/direct/edge-1/console/ws")
        .header(header::HOST, "gw.test")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&f.app, ws).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn transient_accesses_are_listed_and_revoked_from_the_page() {
    let f = fixture();
    let issuer = &f.gateway.issuer;
    let bob = issuer.directory().user("bob").unwrap().clone();
    let site = issuer.directory().device("edge-1").unwrap().id;
    let new = crate::issuer::NewTransient {
        expire_after_minutes: 15,
        kind: crate::store::TransientKind::Ssh,
        full_access: false,
        allow_rfc1918: true,
        allow_only_cidr: Some("203.0.113.42/32".into()),
    };
    let access = issuer
        .create_transient(&bob, site, new, None)
        .await
        .unwrap();

    // Alice does not see Bob's access; Bob does, with its source limit.
    let (alice, _) = sign_in(&f.app, "alice", "alice-pw").await;
    let page = send(&f.app, get("/tracking", Some(&alice))).await;
    assert!(!page.body.contains(&access.id.to_string()));
    let (bob_cookie, csrf) = sign_in(&f.app, "bob", "bob-pw").await;
    let data = send(&f.app, get("/tracking/sessions", Some(&bob_cookie))).await;
    let v: serde_json::Value = serde_json::from_str(&data.body).unwrap();
    let row = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == access.id.to_string())
        .unwrap()
        .clone();
    assert_eq!(row["kind"], "transient");
    assert_eq!(row["state"], "active");
    assert_eq!(row["source"], "only 203.0.113.42/32");
    assert_eq!(row["live"], true);
    assert!(row["type"].as_str().unwrap().starts_with("transient ssh"));

    let r = send(
        &f.app,
        post(
            "/tracking/terminate",
            Some(&bob_cookie),
            SAME,
            &format!("csrf={csrf}&kind=transient&id={}&site={site}", access.id),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        r.headers.get(header::LOCATION).unwrap(),
        "/tracking?done=transient"
    );
    let page = send(&f.app, get("/tracking?done=transient", Some(&bob_cookie))).await;
    assert!(page.body.contains("The transient access was revoked."));
    assert!(
        page.body
            .contains("<span class=\"state state-revoked\">revoked</span>")
    );
    // Revoking again is a conflict, shown as a page, not a crash.
    let r = send(
        &f.app,
        post(
            "/tracking/terminate",
            Some(&bob_cookie),
            SAME,
            &format!("csrf={csrf}&kind=transient&id={}&site={site}", access.id),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}
