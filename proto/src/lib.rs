//! Protobuf code for lanyard's gRPC services, generated with protox and
//! tonic-prost-build (no protoc) and checked in. `tests/drift.rs` regenerates it
//! and fails if it differs from what is here.
//!
//! - [`spiffe`]: the SPIFFE Workload API, from `spiffe/workload.proto`, unchanged
//!   and without a package, so its paths are `/SpiffeWorkloadAPI/...`.

/// The SPIFFE Workload API (proto package: none).
pub mod spiffe {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    include!("gen/_.rs");
}

/// The `.proto` sources and where their generated code lives: used by the drift test.
pub const SOURCES: &[(&str, &str)] = &[("spiffe/workload.proto", "src/gen/_.rs")];
