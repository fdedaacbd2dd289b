//! The token core against the raw ed25519 operations it is built from, and the
//! alternating-rounds harness every ratio in the report uses.
//!
//! This file is the one copy: `lanyard-bench` compiles it as a module, and
//! `token/benches/token.rs` (the criterion per-op figures) includes it with
//! `#[path]`. It depends on `lanyard-token` and std only.

use std::hint::black_box;

use lanyard_token::claims::Constraints;
use lanyard_token::{delegate, ChainIssuer, DelegateRequest, KeyPair, LeafRequest, Verifier};

/// The fixed "now" of the token benchmarks.
pub const NOW: u64 = 1_800_000_000;

/// An org, a chain issuer, a leaf request and a minted leaf.
pub struct Setup {
    pub org: KeyPair,
    pub issuer: ChainIssuer,
    pub req: LeafRequest,
    pub leaf: String,
    /// As long as a real leaf's signing input: what the raw baselines sign.
    pub msg: Vec<u8>,
}

pub fn setup() -> Setup {
    let org = KeyPair::generate().expect("rng");
    let chain = KeyPair::generate().expect("rng");
    let req = DelegateRequest {
        name: "bench".into(),
        validity_secs: 86_400,
        constraints: Constraints::default(),
        roles: Vec::new(),
    };
    let chain_jwt = delegate(&org, &chain.public(), &req, NOW).expect("delegate");
    let issuer = ChainIssuer::new(&chain_jwt, chain).expect("issuer");
    let holder = KeyPair::generate().expect("rng").public();
    let mut req = LeafRequest::workload("spiffe://example.org/ns/prod/sa/web", holder, 3600);
    req.audiences = vec!["billing".into()];
    let leaf = issuer.mint(&req, NOW).expect("mint");
    let msg = leaf.rsplit_once('.').expect("jws").0.as_bytes().to_vec();
    Setup {
        org,
        issuer,
        req,
        leaf,
        msg,
    }
}

/// The median over `rounds` of `a() / b()`, where each call measures one side
/// (a time, a CPU cost per operation) and the order alternates every round, so
/// neither side always runs first. On a shared, noisy host this is far steadier
/// than dividing two figures measured a minute apart.
pub fn median_ratio(rounds: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> f64 {
    let ratios: Vec<f64> = (0..rounds)
        .map(|i| {
            if i % 2 == 0 {
                let ta = a();
                ta / b()
            } else {
                let tb = b();
                a() / tb
            }
        })
        .collect();
    median(ratios)
}

/// The median of the finite values in `v` (NaN if there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// [`median_ratio`] of the wall time of `batch` calls of `a` against `batch`
/// calls of `b`.
pub fn interleaved_ratio(
    rounds: usize,
    batch: u32,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> f64 {
    fn time(batch: u32, f: &mut dyn FnMut()) -> f64 {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_secs_f64()
    }
    median_ratio(rounds, || time(batch, &mut a), || time(batch, &mut b))
}

/// The token ratios, each from `rounds` alternating rounds of `batch` calls.
pub fn ratios(rounds: usize, batch: u32) -> Vec<(&'static str, f64)> {
    let s = setup();
    let sig = s.org.sign(&s.msg);
    let org = s.org.public();
    let lanyard = Verifier::new(org);
    let choria = Verifier::choria(org);
    let sign = || {
        black_box(s.org.sign(black_box(&s.msg)));
    };
    let sign2 = || {
        black_box(s.org.sign(black_box(&s.msg)));
        black_box(s.org.sign(black_box(&s.msg)));
    };
    let verify3 = || {
        for _ in 0..3 {
            black_box(org.verify(black_box(&s.msg), &sig));
        }
    };
    let mint = || drop(black_box(s.issuer.mint(black_box(&s.req), NOW)));
    let warm = || drop(black_box(lanyard.verify(black_box(&s.leaf), NOW + 1)));
    let cold = || {
        drop(black_box(
            Verifier::new(org).verify(black_box(&s.leaf), NOW + 1),
        ))
    };
    let ch = || drop(black_box(choria.verify(black_box(&s.leaf), NOW + 1)));
    vec![
        (
            "mint_vs_ed25519_sign",
            interleaved_ratio(rounds, batch, mint, sign),
        ),
        (
            "mint_vs_2_ed25519_sign",
            interleaved_ratio(rounds, batch, mint, sign2),
        ),
        (
            "chain_verify_vs_3_ed25519_verify",
            interleaved_ratio(rounds, batch, warm, verify3),
        ),
        (
            "chain_verify_cold_vs_3_ed25519_verify",
            interleaved_ratio(rounds, batch, cold, verify3),
        ),
        (
            "choria_chain_verify_vs_3_ed25519_verify",
            interleaved_ratio(rounds, batch, ch, verify3),
        ),
    ]
}
