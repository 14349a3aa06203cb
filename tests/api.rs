//! End-to-end tests of the REST API against the real binary over HTTPS: every endpoint's
//! success path and its listed errors, the three ways to authenticate, self-issue versus
//! issue-for-other with and without sudo, and the transient-access life cycle.

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

fn is_otk(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[tokio::test]
async fn meta_endpoints_and_routing_errors() {
    let (tmp, cfg) = setup("26000-26009");
    let gw = Gateway::start(&cfg);
    // The data directory the gateway created is its owner's alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join("data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "data directory mode {mode:o}");
    }
    assert!(gw.base.starts_with("https://127.0.0.1:"), "{}", gw.base);
    let c = client();
    let r = c.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = c
        .get(gw.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/Session",
        "/api/v1/opensession",
        "/api/v1/tracking/opensessions",
        "/api/v1/tracking/opensessions/terminate",
        "/control-plane/{site_id}/transient-accesses",
        "/sites/{site_id}/transient-accesses/{access_id}",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // 404 and 405 are JSON errors too.
    let r = c.get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = c.get(gw.url("/api/v1/opensession")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
    // Metrics reflect traffic.
    let ticket = login(&c, &gw, "admin", "admin-pw").await;
    post(
        &c,
        &gw,
        &ticket,
        "/api/v1/opensession",
        json!({"target_device":"edge-1","user":"admin"}),
    )
    .await;
    let text = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sallyport_issued_total{kind=\"open_session\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sallyport_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn login_logout_and_authentication_methods() {
    let (_tmp, cfg) = setup("26010-26019");
    let gw = Gateway::start(&cfg);
    let c = client();
    let body = json!({"target_device": "edge-1", "user": "admin"});

    // Bad logins.
    let r = c
        .post(gw.url("/api/v1/Session"))
        .json(&json!({"username":"admin","password":"nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(gw.url("/api/v1/Session"))
        .json(&json!({"username":"ghost","password":"nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(gw.url("/api/v1/Session"))
        .body("{\"username\":")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("malformed JSON"));
    let r = c
        .post(gw.url("/api/v1/Session"))
        .json(&json!({"username":"admin","password":5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .post(gw.url("/api/v1/Session"))
        .body("username=admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // No credentials, garbage credentials.
    let r = c
        .post(gw.url("/api/v1/opensession"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    let got = post(&c, &gw, "not-a-ticket", "/api/v1/opensession", body.clone()).await;
    assert_error(&got, 401, "credentials");

    // Ticket header.
    let ticket = login(&c, &gw, "admin", "admin-pw").await;
    assert_eq!(ticket.len(), 64);
    let got = post(&c, &gw, &ticket, "/api/v1/opensession", body.clone()).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(is_otk(&got.1["session_token"]));

    // Bearer ticket, Bearer API key, username + api_key; a key under the wrong user fails.
    for (k, v) in [
        ("authorization", format!("Bearer {ticket}")),
        ("authorization", format!("Bearer {ADMIN_KEY}")),
    ] {
        let r = c
            .post(gw.url("/api/v1/opensession"))
            .header(k, v)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .post(gw.url("/api/v1/opensession"))
        .header("username", "admin")
        .header("api_key", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(gw.url("/api/v1/opensession"))
        .header("username", "alice")
        .header("api_key", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Logout kills the ticket.
    let r = c
        .delete(gw.url("/api/v1/Session"))
        .header("ticket", &ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = post(&c, &gw, &ticket, "/api/v1/opensession", body.clone()).await;
    assert_eq!(got.0, 401);
    // Passwords and tickets never reach the log.
    let log = gw.log();
    assert!(
        !log.contains("admin-pw") && !log.contains(&ticket) && !log.contains(ADMIN_KEY),
        "secret in log"
    );
}

#[tokio::test]
async fn opensession_validation_and_sudo() {
    let (_tmp, cfg) = setup("26020-26029");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let alice = login(&c, &gw, "alice", "alice-pw").await;
    let bob = login(&c, &gw, "bob", "bob-pw").await;
    let carol = login(&c, &gw, "carol", "carol-pw").await;
    let open = "/api/v1/opensession";

    // The seed's own body: duration as a string.
    let got = post(
        &c,
        &gw,
        &alice,
        open,
        json!({ "user":"alice", "target_device": "edge-1", "duration": "600" }),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    let token = got.1["session_token"].as_str().unwrap().to_string();
    let got = post(
        &c,
        &gw,
        &alice,
        open,
        json!({ "user":"alice", "target_device": "edge-1", "duration": 600 }),
    )
    .await;
    assert_eq!(got.0, 200);
    assert_ne!(got.1["session_token"].as_str().unwrap(), token);
    // Default duration is 10 s.
    let (_, list) = get(&c, &gw, &alice, "/api/v1/tracking/opensessions").await;
    let defaulted = post(
        &c,
        &gw,
        &alice,
        open,
        json!({ "user":"alice", "target_device": "edge-1" }),
    )
    .await;
    assert_eq!(defaulted.0, 200);
    assert_eq!(list.as_array().unwrap().len(), 2);

    for (dur, needle) in [
        (json!(0), "at least 1"),
        (json!(-3), "at least 1"),
        (json!("0"), "at least 1"),
        (json!("ten"), "whole number"),
        (json!(1.5), "whole number"),
        (json!(10_000_000), "at most"),
        (json!(true), "invalid request body"),
        (json!([1]), "invalid request body"),
    ] {
        let got = post(
            &c,
            &gw,
            &alice,
            open,
            json!({ "user":"alice", "target_device":"edge-1", "duration": dur }),
        )
        .await;
        assert_error(&got, 400, needle);
    }
    assert_error(
        &post(&c, &gw, &alice, open, json!({ "user":"alice" })).await,
        400,
        "target_device",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &alice,
            open,
            json!({ "user": 7, "target_device":"edge-1" }),
        )
        .await,
        400,
        "invalid type",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &alice,
            open,
            json!({ "user":"alice", "target_device":"nope" }),
        )
        .await,
        404,
        "unknown device",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &admin,
            open,
            json!({ "user":"ghost", "target_device":"edge-1" }),
        )
        .await,
        404,
        "unknown user",
    );

    // Groups: alice reaches edge-* only; carol has no group at all.
    assert_error(
        &post(
            &c,
            &gw,
            &alice,
            open,
            json!({ "user":"alice", "target_device":"core-1" }),
        )
        .await,
        403,
        "no group",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &carol,
            open,
            json!({ "user":"carol", "target_device":"edge-1" }),
        )
        .await,
        403,
        "no group",
    );
    // Issuing for someone else: needs sudo (bob has none, admin has it).
    assert_error(
        &post(
            &c,
            &gw,
            &bob,
            open,
            json!({ "user":"alice", "target_device":"edge-1" }),
        )
        .await,
        403,
        "sudo",
    );
    let got = post(
        &c,
        &gw,
        &admin,
        open,
        json!({ "user":"alice", "target_device":"edge-1" }),
    )
    .await;
    assert_eq!(got.0, 200);
    // Sudo does not bypass the subject's own reach.
    assert_error(
        &post(
            &c,
            &gw,
            &admin,
            open,
            json!({ "user":"carol", "target_device":"edge-1" }),
        )
        .await,
        403,
        "no group",
    );

    // Denials are audited with their reason (seen in the trace log, never with a token).
    let log = gw.log();
    assert!(
        log.contains("session.denied") && log.contains("needs a group with sudo"),
        "{log}"
    );
    assert!(!log.contains(&token));
}

#[tokio::test]
async fn tracking_list_and_terminate() {
    let (_tmp, cfg) = setup("26030-26039");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let alice = login(&c, &gw, "alice", "alice-pw").await;
    let bob = login(&c, &gw, "bob", "bob-pw").await;
    let open = "/api/v1/opensession";
    post(
        &c,
        &gw,
        &alice,
        open,
        json!({"user":"alice","target_device":"edge-1","duration":600}),
    )
    .await;
    post(
        &c,
        &gw,
        &bob,
        open,
        json!({"user":"bob","target_device":"core-1","duration":600}),
    )
    .await;
    post(
        &c,
        &gw,
        &bob,
        open,
        json!({"user":"bob","target_device":"edge-1","duration":1}),
    )
    .await;

    let (s, all) = get(&c, &gw, &admin, "/api/v1/tracking/opensessions").await;
    assert_eq!(s, 200);
    assert_eq!(all.as_array().unwrap().len(), 3, "sudo sees every session");
    let (_, mine) = get(&c, &gw, &alice, "/api/v1/tracking/opensessions").await;
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1, "others see their own");
    let s0 = &mine[0];
    for field in [
        "id",
        "user",
        "device",
        "state",
        "created_at",
        "expires_at",
        "source",
        "requested_by",
    ] {
        assert!(s0.get(field).is_some(), "missing {field}: {s0}");
    }
    assert_eq!(s0["state"], "generated");
    assert_eq!(s0["user"], "alice");
    assert_eq!(s0["device"], "edge-1");
    let alice_id = s0["id"].as_str().unwrap().to_string();

    // The 1 s key expires (sweeper) and shows so.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (_, bobs) = get(&c, &gw, &bob, "/api/v1/tracking/opensessions").await;
    let short = bobs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["device"] == "edge-1")
        .unwrap()
        .clone();
    assert_eq!(short["state"], "expired");

    // Bob cannot terminate (or even see) alice's session; unknown ids are 404; nothing changes.
    let term = "/api/v1/tracking/opensessions/terminate";
    assert_error(
        &post(&c, &gw, &bob, term, json!({"sessions": alice_id})).await,
        404,
        "unknown session",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &admin,
            term,
            json!({"sessions": format!("{alice_id},nope")}),
        )
        .await,
        404,
        "nope",
    );
    assert_error(
        &post(&c, &gw, &admin, term, json!({"sessions": " , "})).await,
        400,
        "at least one",
    );
    assert_error(
        &post(&c, &gw, &admin, term, json!({"sessions": 5})).await,
        400,
        "invalid type",
    );
    let (_, mine) = get(&c, &gw, &alice, "/api/v1/tracking/opensessions").await;
    assert_eq!(mine[0]["state"], "generated");

    // Alice terminates her own.
    let got = post(&c, &gw, &alice, term, json!({"sessions": alice_id})).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["terminated"], json!([alice_id]));
    let (_, mine) = get(&c, &gw, &alice, "/api/v1/tracking/opensessions").await;
    assert_eq!(mine[0]["state"], "terminated");
    // Terminating again is accepted and changes nothing.
    let got = post(&c, &gw, &admin, term, json!({"sessions": alice_id})).await;
    assert_eq!((got.0, got.1["terminated"].clone()), (200, json!([])));
    assert!(gw.log().contains("session.terminated"));
}

fn create_path(site: &str) -> String {
    format!("/control-plane/{site}/transient-accesses")
}

#[tokio::test]
async fn transient_access_life_cycle() {
    let (_tmp, cfg) = setup("26040-26042");
    let gw = Gateway::start(&cfg);
    let c = client();
    let admin = login(&c, &gw, "admin", "admin-pw").await;
    let body = json!({
        "expire_after_minutes": 15, "type": "winbox", "full_access": true,
        "allow_rfc1918": false, "allow_only_cidr": "203.0.113.42/32"
    });

    // Spanish caller.
    let r = c
        .post(gw.url(&create_path(EDGE_ID)))
        .header("authorization", format!("Bearer {admin}"))
        .header("accept-language", "es-ES,es;q=0.9")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["time_to_expire"], "En 15 minutos");
    assert_eq!(a["type"], "winbox");
    assert_eq!(a["full_access"], true);
    assert_eq!(a["allow_rfc1918"], false);
    assert_eq!(a["allow_only_cidr"], "203.0.113.42/32");
    assert_eq!(a["revoked_early"], false);
    assert_eq!(a["expired"], false);
    assert_eq!(a["entry_point"], "gw.example.test");
    let (id, user, pw) = (
        a["id"].as_str().unwrap(),
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
    );
    let port = a["port"].as_u64().unwrap();
    assert!((26040..=26042).contains(&port));
    assert!(user.starts_with("transient-"));
    assert!(pw.len() >= 20);
    assert_eq!(
        a["onclick"],
        format!("winbox://gw.example.test:{port}?username={user}&password={pw}")
    );
    let expires = a["expires_at"].as_str().unwrap();
    assert!(expires.ends_with('Z') && expires.contains('T'), "{expires}");

    // GET in English (default), list.
    let item = format!("/sites/{EDGE_ID}/transient-accesses/{id}");
    let (s, g) = get(&c, &gw, &admin, &item).await;
    assert_eq!(s, 200);
    assert_eq!(g["time_to_expire"], "15 minutes from now");
    assert_eq!(
        g["password"], pw,
        "GET returns the same password, as in the seed"
    );
    let (s, list) = get(
        &c,
        &gw,
        &admin,
        &format!("/sites/{EDGE_ID}/transient-accesses"),
    )
    .await;
    assert_eq!((s, list.as_array().unwrap().len()), (200, 1));

    // SSH type gets an ssh:// link; a device without a winbox address cannot have winbox.
    let got = post(
        &c,
        &gw,
        &admin,
        &create_path(EDGE_ID),
        json!({"expire_after_minutes": 60, "type": "ssh"}),
    )
    .await;
    assert_eq!(got.0, 201, "{}", got.1);
    assert_eq!(
        got.1["onclick"],
        format!(
            "ssh://{}@gw.example.test:{}",
            got.1["username"].as_str().unwrap(),
            got.1["port"]
        )
    );
    assert_eq!(got.1["time_to_expire"], "1 hour from now");
    assert_ne!(
        got.1["port"].as_u64().unwrap(),
        port,
        "two live accesses never share a port"
    );
    assert_error(
        &post(
            &c,
            &gw,
            &admin,
            &create_path(CORE_ID),
            json!({"expire_after_minutes": 60, "type": "winbox"}),
        )
        .await,
        400,
        "no winbox address",
    );

    // Validation.
    for (b, needle) in [
        (
            json!({"expire_after_minutes": 14, "type": "winbox"}),
            "between 15 and 1440",
        ),
        (
            json!({"expire_after_minutes": 1441, "type": "winbox"}),
            "between 15 and 1440",
        ),
        (
            json!({"expire_after_minutes": 20, "type": "telnet"}),
            "unknown variant",
        ),
        (
            json!({"expire_after_minutes": "20", "type": "ssh"}),
            "invalid type",
        ),
        (json!({"type": "ssh"}), "expire_after_minutes"),
        (
            json!({"expire_after_minutes": 20, "type": "ssh", "allow_only_cidr": "300.1.1.1/32"}),
            "not an address or a CIDR",
        ),
        (
            json!({"expire_after_minutes": 20, "type": "ssh", "allow_only_cidr": "10.0.0.0/99"}),
            "not an address or a CIDR",
        ),
        // Blank is not "anyone": it is refused, so a form left empty cannot open an access
        // to every source.
        (
            json!({"expire_after_minutes": 20, "type": "ssh", "allow_only_cidr": " "}),
            "blank",
        ),
        (
            json!({"expire_after_minutes": 20, "type": "ssh", "full_access": "yes"}),
            "invalid type",
        ),
    ] {
        assert_error(
            &post(&c, &gw, &admin, &create_path(EDGE_ID), b).await,
            400,
            needle,
        );
    }
    assert_error(
        &post(&c, &gw, &admin, &create_path("not-a-uuid"), body.clone()).await,
        400,
        "UUID",
    );
    assert_error(
        &post(
            &c,
            &gw,
            &admin,
            &create_path("00000000-0000-4000-8000-000000000000"),
            body.clone(),
        )
        .await,
        404,
        "unknown site",
    );
    assert_error(
        &get(
            &c,
            &gw,
            &admin,
            &format!("/sites/{EDGE_ID}/transient-accesses/00000000-0000-4000-8000-000000000000"),
        )
        .await,
        404,
        "unknown transient",
    );

    // Authorization: carol has no group; alice only read-only (full_access denied, read ok).
    let carol = login(&c, &gw, "carol", "carol-pw").await;
    assert_error(
        &post(&c, &gw, &carol, &create_path(EDGE_ID), body.clone()).await,
        403,
        "no group",
    );
    let alice = login(&c, &gw, "alice", "alice-pw").await;
    assert_error(
        &post(&c, &gw, &alice, &create_path(EDGE_ID), body.clone()).await,
        403,
        "read-only",
    );
    // Only 3 ports: two are held, alice's read-only access takes the last, then the pool is empty.
    let got = post(
        &c,
        &gw,
        &alice,
        &create_path(EDGE_ID),
        json!({"expire_after_minutes": 15, "type": "winbox"}),
    )
    .await;
    assert_eq!(got.0, 201, "{}", got.1);
    assert_eq!(got.1["full_access"], false);
    // Alice cannot see admin's access, admin (sudo) sees alice's.
    assert_error(&get(&c, &gw, &alice, &item).await, 404, "unknown transient");
    let (_, alices) = get(
        &c,
        &gw,
        &alice,
        &format!("/sites/{EDGE_ID}/transient-accesses"),
    )
    .await;
    assert_eq!(alices.as_array().unwrap().len(), 1);
    assert_error(
        &post(&c, &gw, &admin, &create_path(EDGE_ID), body.clone()).await,
        503,
        "no free port",
    );

    // Revoke: the object comes back expired and revoked early; the port is free again.
    let r = c
        .delete(gw.url(&item))
        .header("ticket", &admin)
        .header("accept-language", "es")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert_eq!(
        (revoked["revoked_early"].clone(), revoked["expired"].clone()),
        (json!(true), json!(true))
    );
    // It expired when it was revoked: no time left is shown next to `expired: true`.
    assert_eq!(
        revoked["time_to_expire"], "Hace menos de un minuto",
        "{revoked}"
    );
    let ended = time::OffsetDateTime::parse(
        revoked["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(ended <= time::OffsetDateTime::now_utc(), "{revoked}");
    let r = c
        .delete(gw.url(&item))
        .header("ticket", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let got = post(&c, &gw, &admin, &create_path(EDGE_ID), body.clone()).await;
    assert_eq!(got.0, 201, "{}", got.1);
    assert_eq!(
        got.1["port"].as_u64().unwrap(),
        port,
        "the freed port is the only free one"
    );
    let log = gw.log();
    assert!(log.contains("transient.revoked") && log.contains("transient.issued"));
    assert!(!log.contains(pw), "password in log");
}
