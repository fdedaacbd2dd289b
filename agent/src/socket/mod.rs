//! Stage 1, the socket: the Workload API services a caller reaches over the
//! agent's Unix socket (SPIFFE `FetchX509SVID`/`FetchJWTSVID`/…, and
//! `lanyard.workload.v1` credentials), the client helpers the CLI uses to call
//! them, and the agent's answers on the health endpoint. Accepting, admission
//! and peer pinning are in `lanyard-runtime`'s `serve`.

pub mod api;
pub mod client;
pub mod health;
