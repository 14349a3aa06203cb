//! SDK for sallyport policy plugins: WebAssembly components that implement one hook of the
//! WIT package `sallyport:policy@0.1.0` (`wit/policy.wit` in the sallyport repository).
//!
//! A plugin is a `cdylib` crate with one type that implements [`Authorize`], [`Sudo`] or
//! [`CheckSource`], exported with [`export_authorize!`], [`export_sudo!`] or
//! [`export_check_source!`]. The macros expand to the wit-bindgen glue on `wasm32` and to
//! nothing elsewhere, so the same crate builds natively and its tests call the policy
//! directly with a [`Request::builder`], while [`config`] and [`log`] are served in-process
//! by the [`testing`] module.
//!
//! Helpers for the usual rules: [`net`] (source addresses, CIDR, RFC 1918), [`time`] (time
//! of day from the request's clock and a fixed UTC offset), [`glob`] (`*` and `?`
//! patterns), and [`config_json`] for structured configuration.
//!
//! # Example
//!
//! A complete authorize plugin that lets only the groups named in its configuration reach
//! devices whose names start with `lab-`, read-only, for at most an hour:
//!
//! ```
//! use sallyport_plugin::{AccessLevel, Authorize, Decision, Grant, Request};
//!
//! /// The policy; the type carries no state (every decision runs in a fresh instance).
//! pub struct LabPolicy;
//!
//! impl Authorize for LabPolicy {
//!     fn authorize(r: &Request) -> Decision {
//!         if !sallyport_plugin::glob::matches("lab-*", &r.device.name) {
//!             return Decision::abstain(); // not a lab device: the other plugins decide
//!         }
//!         let allowed = sallyport_plugin::config("groups").unwrap_or_default();
//!         let member = r.subject.groups.iter().any(|g| allowed.split(',').any(|a| a.trim() == g));
//!         if !member {
//!             return Decision::deny(format!("{} is not in a lab group", r.subject.name));
//!         }
//!         sallyport_plugin::log(sallyport_plugin::Level::Info, "lab access granted");
//!         Decision::allow_with(
//!             Grant::new().with_access(AccessLevel::ReadOnly).with_max_ttl_seconds(3600),
//!         )
//!     }
//! }
//!
//! sallyport_plugin::export_authorize!(LabPolicy);
//!
//! // Unit test, native `cargo test`:
//! use sallyport_plugin::{testing, Principal};
//! testing::set_config("groups", "lab, ops");
//! let r = Request::builder()
//!     .user(Principal::new("alice").with_groups(["ops"]))
//!     .device_name("lab-sw1")
//!     .build();
//! let d = LabPolicy::authorize(&r);
//! assert!(d.is_allow());
//! assert_eq!(d.grant().and_then(|g| g.access), Some(AccessLevel::ReadOnly));
//! assert_eq!(testing::take_logs(), [(sallyport_plugin::Level::Info, "lab access granted".to_string())]);
//! let r = Request::builder().user(Principal::new("bob")).device_name("lab-sw1").build();
//! assert_eq!(LabPolicy::authorize(&r), Decision::deny("bob is not in a lab group"));
//! ```
//!
//! Build it as a component with sallyport's `plugins/build.sh` recipe (core module for
//! `wasm32-unknown-unknown`, then component encoding); see `plugins/README.md`.
#![deny(missing_docs)]

extern crate self as sallyport_plugin;

mod alloc;
#[allow(missing_docs)]
pub mod bindings;
mod decision;
pub mod glob;
mod host;
pub mod net;
mod request;
pub mod testing;
pub mod time;

pub use bindings::authorize::sallyport::policy::types::{
    AccessLevel, Action, Decision, Device, Grant, Principal, Protocol, Request,
};
pub use host::{ConfigError, Level, config, config_json, log};
pub use request::RequestBuilder;

/// A policy for the authorize hook: may the request's subject reach its device?
pub trait Authorize {
    /// Decides one request. Runs in a fresh instance: keep no state between calls.
    fn authorize(request: &Request) -> Decision;
}

/// A policy for the sudo hook: may the requester act for the subject?
pub trait Sudo {
    /// Decides one request. Runs in a fresh instance: keep no state between calls.
    fn sudo(request: &Request) -> Decision;
}

/// A policy for the source hook: may the request come from its source address?
pub trait CheckSource {
    /// Decides one request. Runs in a fresh instance: keep no state between calls.
    fn check_source(request: &Request) -> Decision;
}

/// Not part of the API: paths the export macros expand to.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}

/// Exports a type implementing [`Authorize`] as the component's `authorize` function
/// (world `sallyport:policy/authorize-policy@0.1.0`). Expands to nothing on non-wasm targets.
#[macro_export]
macro_rules! export_authorize {
    ($policy:ty) => {
        $crate::__export_hook!(
            $policy,
            Authorize,
            authorize,
            authorize,
            __export_authorize_policy_impl
        );
    };
}

/// Exports a type implementing [`Sudo`] as the component's `sudo` function
/// (world `sallyport:policy/sudo-policy@0.1.0`). Expands to nothing on non-wasm targets.
#[macro_export]
macro_rules! export_sudo {
    ($policy:ty) => {
        $crate::__export_hook!($policy, Sudo, sudo, sudo, __export_sudo_policy_impl);
    };
}

/// Exports a type implementing [`CheckSource`] as the component's `check-source` function
/// (world `sallyport:policy/source-policy@0.1.0`). Expands to nothing on non-wasm targets.
#[macro_export]
macro_rules! export_check_source {
    ($policy:ty) => {
        $crate::__export_hook!(
            $policy,
            CheckSource,
            check_source,
            source,
            __export_source_policy_impl
        );
    };
}

/// Not part of the API: the body of the `export_*!` macros. Implements the world's generated
/// `Guest` trait by calling the hook trait, then expands wit-bindgen's export macro.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    ($policy:ty, $hook:ident, $func:ident, $world:ident, $wit_export:ident) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct SallyportGlue;
            impl $crate::bindings::$world::Guest for SallyportGlue {
                fn $func(r: $crate::Request) -> $crate::Decision {
                    <$policy as $crate::$hook>::$func(&r)
                }
            }
    $crate::$wit_export!(SallyportGlue with_types_in $crate::bindings::$world);
        };
    };
}
