//! Building requests (for tests and tools) and naming the generated enums.

use crate::{AccessLevel, Action, Device, Principal, Protocol, Request};

impl Principal {
    /// A user with no groups and no sudo permission.
    pub fn new(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            groups: Vec::new(),
            sudo: false,
        }
    }

    /// Replaces the user's groups.
    pub fn with_groups<I: IntoIterator<Item = S>, S: Into<String>>(mut self, groups: I) -> Self {
        self.groups = groups.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the sudo permission.
    pub fn with_sudo(mut self, sudo: bool) -> Self {
        self.sudo = sudo;
        self
    }

    /// True if the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl Device {
    /// A device with an empty id and no tags.
    pub fn new(name: impl Into<String>) -> Self {
        Device {
            name: name.into(),
            id: String::new(),
            tags: Vec::new(),
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Replaces the tags.
    pub fn with_tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// True if the device carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

impl Action {
    /// The WIT name: `issue-session`, `issue-transient` or `connect`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::IssueSession => "issue-session",
            Action::IssueTransient => "issue-transient",
            Action::Connect => "connect",
        }
    }

    /// True for the two issuing actions.
    pub fn is_issuance(self) -> bool {
        self != Action::Connect
    }
}

impl Protocol {
    /// The WIT name: `ssh`, `winbox` or `web-console`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ssh => "ssh",
            Protocol::Winbox => "winbox",
            Protocol::WebConsole => "web-console",
        }
    }
}

impl Request {
    /// Starts a request with test defaults: `issue-session` by and for user `user` (no
    /// groups), device `device1`, `ssh`, `full`, 10 s, no source, no CIDR, RFC 1918
    /// allowed, clock at the epoch, request id `test`.
    pub fn builder() -> RequestBuilder {
        let user = Principal::new("user");
        RequestBuilder(Request {
            action: Action::IssueSession,
            requester: user.clone(),
            subject: user,
            device: Device::new("device1"),
            protocol: Protocol::Ssh,
            access: AccessLevel::Full,
            ttl_seconds: 10,
            source: None,
            allow_only_cidr: None,
            allow_rfc1918: true,
            now_unix_ms: 0,
            request_id: "test".to_string(),
        })
    }

    /// True if the requester issues for someone else.
    pub fn is_on_behalf(&self) -> bool {
        self.requester.name != self.subject.name
    }
}

/// Builds a [`Request`] field by field; see [`Request::builder`] for the defaults.
#[derive(Clone, Debug)]
pub struct RequestBuilder(Request);

impl RequestBuilder {
    /// Sets the action.
    pub fn action(mut self, action: Action) -> Self {
        self.0.action = action;
        self
    }

    /// Sets requester and subject to the same user.
    pub fn user(mut self, user: Principal) -> Self {
        self.0.requester = user.clone();
        self.0.subject = user;
        self
    }

    /// Sets the requester only.
    pub fn requester(mut self, requester: Principal) -> Self {
        self.0.requester = requester;
        self
    }

    /// Sets the subject only.
    pub fn subject(mut self, subject: Principal) -> Self {
        self.0.subject = subject;
        self
    }

    /// Sets the device.
    pub fn device(mut self, device: Device) -> Self {
        self.0.device = device;
        self
    }

    /// Sets the device to one named `name`.
    pub fn device_name(self, name: impl Into<String>) -> Self {
        self.device(Device::new(name))
    }

    /// Sets the protocol.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.0.protocol = protocol;
        self
    }

    /// Sets the access level asked for.
    pub fn access(mut self, access: AccessLevel) -> Self {
        self.0.access = access;
        self
    }

    /// Sets the lifetime asked for.
    pub fn ttl_seconds(mut self, ttl: u32) -> Self {
        self.0.ttl_seconds = ttl;
        self
    }

    /// Sets the source address.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Sets the CIDR connections must come from.
    pub fn allow_only_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.0.allow_only_cidr = Some(cidr.into());
        self
    }

    /// Sets whether RFC 1918 sources are allowed.
    pub fn allow_rfc1918(mut self, allow: bool) -> Self {
        self.0.allow_rfc1918 = allow;
        self
    }

    /// Sets the host clock, milliseconds since the Unix epoch.
    pub fn now_unix_ms(mut self, now: u64) -> Self {
        self.0.now_unix_ms = now;
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.0.request_id = id.into();
        self
    }

    /// The finished request.
    pub fn build(self) -> Request {
        self.0
    }
}
