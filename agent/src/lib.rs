//! The lanyard agent: a Unix-socket Workload API that attests each caller from
//! kernel facts and hands out SPIFFE SVIDs and seed + JWT credentials.
//!
//! Start with [`app::build`], then [`app::Bound::wait_termination`].

// The socket, the authority and the helpers both daemons share live in
// `lanyard-runtime`; these keep the agent's paths (`crate::peer`, …) short.
pub use lanyard_runtime::{
    admission, authority, authority_fix, clock, der, fsutil, metrics, peer, pem, server, svid, tls,
    tls_identity,
};

pub mod api;
pub mod app;
pub mod attest;
pub mod cache;
pub mod client;
pub mod config;
pub mod fuzzing;
pub mod health;
pub mod restore;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upstream;
