//! sallyport: an access gateway for managed network devices.
//!
//! It issues short-lived credentials over REST (Nodegrid open-session one-time keys, Altostrat
//! transient accesses), carries the SSH and Winbox connections they open, and hands every
//! access decision to [`policy`]. Start with [`server::Gateway::open`] and [`server::run`]; the browser pages are in [`web`].

pub mod api;
pub mod audit;
pub mod config;
pub mod directory;
pub mod http_conn;
pub mod issuer;
pub mod lanes;
pub mod metrics;
pub mod policy;
pub mod provision;
pub mod secret;
pub mod server;
pub mod slots;
pub mod ssh;
pub mod store;
pub mod tcp;
pub mod tls;
pub mod web;
