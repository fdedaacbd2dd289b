//! Placeholder until the hardening issue: criterion benches live beside the crates.
fn main() {}
