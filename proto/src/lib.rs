//! Protobuf code for lanyard's gRPC services, generated with protox and
//! tonic-prost-build (no protoc) and checked in. `tests/drift.rs` regenerates it
//! and fails if it differs from what is here.
//!
//! - [`spiffe`]: the SPIFFE Workload API, from `spiffe/workload.proto`, unchanged
//!   and without a package, so its paths are `/SpiffeWorkloadAPI/...`.
//! - [`workload`]: `lanyard.workload.v1`, seed + JWT credentials for workloads.
//! - [`issuer`]: `lanyard.issuer.v1`, agent ↔ issuer (`Node`) and operators (`Admin`).

/// The SPIFFE Workload API (proto package: none).
pub mod spiffe {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    include!("gen/_.rs");
}

/// `lanyard.workload.v1`: seed + JWT credentials on the agent socket.
pub mod workload {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    include!("gen/lanyard.workload.v1.rs");
}

/// `lanyard.issuer.v1`: the upstream issuer's node and admin services.
pub mod issuer {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    include!("gen/lanyard.issuer.v1.rs");
}

/// The `.proto` sources and where their generated code lives: used by the drift test.
pub const SOURCES: &[(&str, &str)] = &[
    ("spiffe/workload.proto", "src/gen/_.rs"),
    (
        "lanyard/workload/v1/workload.proto",
        "src/gen/lanyard.workload.v1.rs",
    ),
    (
        "lanyard/issuer/v1/issuer.proto",
        "src/gen/lanyard.issuer.v1.rs",
    ),
];
