//! End-to-end tests live in `tests/` of this crate; they run the built `lanyard` binary.
