//! What both daemons (the agent and the issuer) stand on, and nothing of
//! either: neither attestation nor the credential cache lives here, so the
//! issuer needs no part of the agent.
//!
//! - [`serve`]: Unix sockets with admission budgets and peer pinning (pidfd),
//!   the `:authority` fix for gRPC C-core clients, the health endpoint;
//! - [`authority`]: the chain issuer's signing authority, SVID signers, the
//!   TLS identity of the issuer;
//! - [`config`]: what both configs share (errors that name the key, TOML with
//!   line and column, `LANYARD_*` overrides, `[authority]`, `health_addr`);
//! - [`clock`], [`fsutil`], [`metrics`], [`termination`].
//!
//! Data flows one way: `lanyard-agent` and `lanyard-issuer` import this crate,
//! which imports only proto, token and plugins.

pub mod authority;
pub mod clock;
pub mod config;
pub mod fsutil;
pub mod metrics;
pub mod serve;
pub mod termination;

// Short paths for the modules inside the folders, as the daemons name them.
pub use authority::{der, pem, svid, tls, tls_identity};
pub use serve::{admission, authority_fix, health, peer, server};
