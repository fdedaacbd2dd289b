//! Criterion's per-operation times for mint and verify next to the raw ed25519
//! operations they are built from, for orientation.
//!
//! Run: `cargo bench -p lanyard-token --bench token`. The ratios that matter
//! (`ratio mint_vs_ed25519_sign`, …) are measured in alternating rounds by
//! `cargo run --release -p lanyard-bench`, which writes BENCHMARKS.md; this bench
//! prints the same lines after criterion's figures, from the same code
//! (`bench/src/token.rs`, included below).

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use lanyard_token::Verifier;

#[path = "../../bench/src/token.rs"]
#[allow(dead_code)]
mod shared;

use shared::NOW;

fn benches(c: &mut Criterion) {
    let s = shared::setup();
    let mut g = c.benchmark_group("token");
    g.bench_function("ed25519_sign", |b| {
        b.iter(|| black_box(s.org.sign(black_box(&s.msg))))
    });
    let sig = s.org.sign(&s.msg);
    let public = s.org.public();
    g.bench_function("ed25519_verify", |b| {
        b.iter(|| black_box(public.verify(black_box(&s.msg), &sig)))
    });
    g.bench_function("leaf_mint", |b| {
        b.iter(|| black_box(s.issuer.mint(black_box(&s.req), NOW)))
    });
    let lanyard = Verifier::new(s.org.public());
    let choria = Verifier::choria(s.org.public());
    g.bench_function("chain_verify_lanyard", |b| {
        b.iter(|| black_box(lanyard.verify(black_box(&s.leaf), NOW + 1)))
    });
    // A verifier that has never seen this chain issuer: decodes its key too.
    let org = s.org.public();
    g.bench_function("chain_verify_lanyard_cold", |b| {
        b.iter(|| black_box(Verifier::new(org).verify(black_box(&s.leaf), NOW + 1)))
    });
    g.bench_function("chain_verify_choria", |b| {
        b.iter(|| black_box(choria.verify(black_box(&s.leaf), NOW + 1)))
    });
    g.finish();
}

criterion_group!(token, benches);

fn main() {
    token();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --all-targets` runs each bench once as a smoke test; the ratio
    // rounds are for `cargo bench` (which passes --bench) only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    for (name, value) in shared::ratios(41, 200) {
        println!("ratio {name} {value:.2}");
    }
}
