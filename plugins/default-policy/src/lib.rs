//! sallyport's built-in policies as the one component the gateway loads: `authorize`
//! (`default-authorize`), `sudo` (`default-sudo`) and `check-source` (`default-source`),
//! each exported by its own crate, linked here into one module so that one instance answers
//! every hook of a request (one instantiation per request instead of one per hook).
//!
//! The three crates still build as components of their own (`plugins/dist/default-*.wasm`),
//! for `sallyport plugin test` and as examples of single-hook plugins.

// Linking the crates is what brings in their exports and component-type sections.
extern crate default_authorize;
extern crate default_source;
extern crate default_sudo;
