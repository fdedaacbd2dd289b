//! The socket stage: accepting connections on a Unix socket under per-principal
//! budgets ([`admission`]), pinning each caller to its process ([`peer`]),
//! serving gRPC over them ([`server`], with [`authority_fix`] for C-core
//! clients), and the bounded HTTP health endpoint ([`health`]).

pub mod admission;
pub mod authority_fix;
pub mod health;
pub mod peer;
pub mod server;
