//! The upstream chain issuer: node attestation, node-scoped registration entries
//! in a durable store (SQLite, or PostgreSQL shared by replicas), signing for
//! agents, and revocation by signed deny lists. Agents reach it over TLS whose
//! server identity is the chain issuer credential; operators over a local socket.
//!
//! Start with [`app::build`], then [`app::Bound::wait_termination`].

pub mod admin;
pub mod app;
pub mod config;
pub mod entry_index;
pub mod fuzzing;
pub mod limits;
pub mod node_api;
pub mod nonces;
pub mod state;
pub mod store;
