//! Mint and verify against the raw ed25519 operations they are built from.
//!
//! Run: `cargo bench -p lanyard-token --bench token`. After criterion's per-op
//! figures it prints `ratio NAME VALUE` lines, each measured by interleaving the two
//! operations in one run (see `interleaved_ratio`).

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
use lanyard_token::claims::Constraints;
use lanyard_token::{delegate, ChainIssuer, DelegateRequest, KeyPair, LeafRequest, Verifier};

const NOW: u64 = 1_800_000_000;

struct Setup {
    org: KeyPair,
    issuer: ChainIssuer,
    req: LeafRequest,
    leaf: String,
    msg: Vec<u8>,
}

fn setup() -> Setup {
    let org = KeyPair::generate().expect("rng");
    let chain = KeyPair::generate().expect("rng");
    let req = DelegateRequest {
        name: "bench".into(),
        validity_secs: 86_400,
        constraints: Constraints::default(),
    };
    let chain_jwt = delegate(&org, &chain.public(), &req, NOW).expect("delegate");
    let issuer = ChainIssuer::new(&chain_jwt, chain).expect("issuer");
    let holder = KeyPair::generate().expect("rng").public();
    let mut req = LeafRequest::workload("spiffe://example.org/ns/prod/sa/web", holder, 3600);
    req.audiences = vec!["billing".into()];
    let leaf = issuer.mint(&req, NOW).expect("mint");
    // The raw baselines sign and verify a message as long as a leaf's signing input.
    let msg = leaf.rsplit_once('.').expect("jws").0.as_bytes().to_vec();
    Setup {
        org,
        issuer,
        req,
        leaf,
        msg,
    }
}

fn benches(c: &mut Criterion) {
    let s = setup();
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

/// Median over rounds of time(a) / time(b), with `a` and `b` run in alternating
/// batches so that both see the same machine. On a shared, noisy host this is far
/// steadier than dividing two benchmarks that ran a minute apart.
fn interleaved_ratio(rounds: usize, batch: u32, mut a: impl FnMut(), mut b: impl FnMut()) -> f64 {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_secs_f64()
    };
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|i| {
            // Alternate which goes first, so neither always gets a warm cache.
            if i % 2 == 0 {
                let ta = time(&mut a);
                ta / time(&mut b)
            } else {
                let tb = time(&mut b);
                time(&mut a) / tb
            }
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn main() {
    token();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --all-targets` runs each bench once as a smoke test; the ratio
    // rounds are for `cargo bench` (which passes --bench) only.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let s = setup();
    let sig = s.org.sign(&s.msg);
    let public = s.org.public();
    let org = s.org.public();
    let lanyard = Verifier::new(org);
    let choria = Verifier::choria(org);
    let (rounds, batch) = (41, 200);
    let sign = || {
        black_box(s.org.sign(black_box(&s.msg)));
    };
    let sign2 = || {
        black_box(s.org.sign(black_box(&s.msg)));
        black_box(s.org.sign(black_box(&s.msg)));
    };
    let verify3 = || {
        for _ in 0..3 {
            black_box(public.verify(black_box(&s.msg), &sig));
        }
    };
    let mint = || drop(black_box(s.issuer.mint(black_box(&s.req), NOW)));
    println!(
        "ratio mint_vs_ed25519_sign {:.2}",
        interleaved_ratio(rounds, batch, mint, sign)
    );
    println!(
        "ratio mint_vs_2_ed25519_sign {:.2}",
        interleaved_ratio(rounds, batch, mint, sign2)
    );
    let warm = || drop(black_box(lanyard.verify(black_box(&s.leaf), NOW + 1)));
    println!(
        "ratio chain_verify_vs_3_ed25519_verify {:.2}",
        interleaved_ratio(rounds, batch, warm, verify3)
    );
    let cold = || {
        drop(black_box(
            Verifier::new(org).verify(black_box(&s.leaf), NOW + 1),
        ))
    };
    println!(
        "ratio chain_verify_cold_vs_3_ed25519_verify {:.2}",
        interleaved_ratio(rounds, batch, cold, verify3)
    );
    let ch = || drop(black_box(choria.verify(black_box(&s.leaf), NOW + 1)));
    println!(
        "ratio choria_chain_verify_vs_3_ed25519_verify {:.2}",
        interleaved_ratio(rounds, batch, ch, verify3)
    );
}
