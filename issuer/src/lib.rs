//! The upstream chain issuer: node attestation, node-scoped registration entries,
//! a durable store (SQLite embedded or shared PostgreSQL), signing, revocation and
//! the admin API.

pub mod store;
