//! Generated bindings for the WIT package `sallyport:policy@0.1.0` (`wit/` at the workspace
//! root, the one source of the ABI), and conversions between them and the host's own types.
//! Private to `policy`: nothing else sees generated code.

#![allow(missing_docs, clippy::all)]

pub mod authorize {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "authorize-policy",
    });
}

pub mod sudo {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sudo-policy",
        with: {
            "sallyport:policy/types": super::authorize::sallyport::policy::types,
            "sallyport:policy/host": super::authorize::sallyport::policy::host,
        },
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "source-policy",
        with: {
            "sallyport:policy/types": super::authorize::sallyport::policy::types,
            "sallyport:policy/host": super::authorize::sallyport::policy::host,
        },
    });
}

pub use authorize::sallyport::policy::host::{Host, add_to_linker as add_host_to_linker};
pub use authorize::sallyport::policy::types as wit;

use super::{Action, Decision, DeviceRef, Grant, Principal, Protocol, Request};
use crate::config::AccessLevel;

fn access_to(a: AccessLevel) -> wit::AccessLevel {
    match a {
        AccessLevel::Full => wit::AccessLevel::Full,
        AccessLevel::ReadOnly => wit::AccessLevel::ReadOnly,
    }
}

fn access_from(a: wit::AccessLevel) -> AccessLevel {
    match a {
        wit::AccessLevel::Full => AccessLevel::Full,
        wit::AccessLevel::ReadOnly => AccessLevel::ReadOnly,
    }
}

fn principal(p: &Principal) -> wit::Principal {
    wit::Principal {
        name: p.name.clone(),
        groups: p.groups.clone(),
        sudo: p.sudo,
    }
}

fn device(d: &DeviceRef) -> wit::Device {
    wit::Device {
        name: d.name.clone(),
        id: d.id.clone(),
        tags: d.tags.clone(),
    }
}

/// The request as the guest sees it.
pub fn request(r: &Request) -> wit::Request {
    wit::Request {
        action: match r.action {
            Action::IssueSession => wit::Action::IssueSession,
            Action::IssueTransient => wit::Action::IssueTransient,
            Action::Connect => wit::Action::Connect,
        },
        requester: principal(&r.requester),
        subject: principal(&r.subject),
        device: device(&r.device),
        protocol: match r.protocol {
            Protocol::Ssh => wit::Protocol::Ssh,
            Protocol::Winbox => wit::Protocol::Winbox,
            Protocol::WebConsole => wit::Protocol::WebConsole,
        },
        access: access_to(r.access),
        ttl_seconds: r.ttl_seconds,
        source: r.source.clone(),
        allow_only_cidr: r.allow_only_cidr.clone(),
        allow_rfc1918: r.allow_rfc1918,
        now_unix_ms: r.now_unix_ms,
        request_id: r.request_id.clone(),
    }
}

/// The guest's answer as the host's type.
pub fn decision(d: wit::Decision) -> Decision {
    match d {
        wit::Decision::Allow(g) => Decision::Allow(Grant {
            max_ttl_seconds: g.max_ttl_seconds,
            access: g.access.map(access_from),
            obligations: g.obligations,
        }),
        wit::Decision::Deny(reason) => Decision::Deny(reason),
        wit::Decision::Abstain => Decision::Abstain,
    }
}
