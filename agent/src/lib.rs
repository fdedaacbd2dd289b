//! The lanyard agent: a Unix-socket Workload API that attests each caller from
//! kernel facts and hands out SPIFFE SVIDs and seed + JWT credentials.
//!
//! Start with [`app::build`], then [`app::Bound::wait_termination`].

pub mod admission;
pub mod api;
pub mod app;
pub mod attest;
pub mod authority;
pub mod authority_fix;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod der;
pub mod fsutil;
pub mod fuzzing;
pub mod health;
pub mod metrics;
pub mod peer;
pub mod pem;
pub mod restore;
pub mod server;
pub mod svid;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod tls_identity;
pub mod upstream;
