//! Stage 5, the authority: whoever signs. The `Authority` seam and the
//! standalone [`LocalAuthority`] come from `lanyard-runtime` (the issuer signs
//! with the same one); [`upstream`] is the agent's client of the chain issuer:
//! node attestation, sessions, renewal, and the sync task, which hands entries
//! and deny lists to the agent over a channel (`app::sync` applies them).

pub use lanyard_runtime::authority::*;

pub mod upstream;
