//! The lanyard agent: a Unix-socket Workload API that attests each caller from
//! kernel facts and hands out SPIFFE SVIDs and seed + JWT credentials.
//!
//! Start with [`app::build`], then [`app::Bound::wait_termination`].

// The agent's stages, in the order a request flows through them: `socket`
// (the Workload API), `attest` (selectors from kernel facts), `matching`
// (entries for those selectors), `cache` (credentials kept and rotated),
// `authority` (who signs: local, or the upstream issuer). No stage imports one
// before it (`scripts/arch-check.py`). `app` wires them; `config` feeds them.
pub mod app;
pub mod attest;
pub mod authority;
pub mod cache;
pub mod config;
pub mod fuzzing;
pub mod matching;
pub mod socket;
#[cfg(feature = "testing")]
pub mod testing;

// What both daemons share lives in `lanyard-runtime`; these keep the paths
// short (`crate::peer`, `lanyard_agent::svid`, …).
pub use lanyard_runtime::{
    admission, authority_fix, clock, der, fsutil, metrics, peer, pem, server, svid, tls,
    tls_identity,
};
// The paths the CLI, the tests and the bench have used since before the stage
// folders.
pub use authority::upstream;
pub use cache::restore;
pub use socket::{api, client, health};
