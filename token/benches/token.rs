//! Mint and verify against the raw ed25519 operations they are built from.
//!
//! Run: `cargo bench -p lanyard-token --bench token`. After criterion's own output
//! it prints `ratio NAME VALUE` lines computed from this same run's estimates.

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

/// Mean time in ns from criterion's estimates for `token/<id>` in this run.
fn mean_ns(id: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let text =
        std::fs::read_to_string(target.join(format!("criterion/token/{id}/new/estimates.json")))
            .ok()?;
    // Deliberately tiny: find "mean":{..."point_estimate":X
    let after = &text[text.find("\"mean\"")?..];
    let after = &after[after.find("\"point_estimate\":")? + 17..];
    after[..after.find([',', '}'])?].trim().parse().ok()
}

fn main() {
    token();
    Criterion::default().configure_from_args().final_summary();
    let get = |id| mean_ns(id);
    if let (Some(sign), Some(verify), Some(mint), Some(vl), Some(cold), Some(vc)) = (
        get("ed25519_sign"),
        get("ed25519_verify"),
        get("leaf_mint"),
        get("chain_verify_lanyard"),
        get("chain_verify_lanyard_cold"),
        get("chain_verify_choria"),
    ) {
        println!("figure ed25519_sign_ns {sign:.0} ns");
        println!("figure ed25519_verify_ns {verify:.0} ns");
        println!("ratio mint_vs_ed25519_sign {:.2}", mint / sign);
        println!("ratio mint_vs_2_ed25519_sign {:.2}", mint / (2.0 * sign));
        println!(
            "ratio chain_verify_cold_vs_3_ed25519_verify {:.2}",
            cold / (3.0 * verify)
        );
        println!(
            "ratio chain_verify_vs_3_ed25519_verify {:.2}",
            vl / (3.0 * verify)
        );
        println!(
            "ratio choria_chain_verify_vs_3_ed25519_verify {:.2}",
            vc / (3.0 * verify)
        );
    } else {
        println!("(ratios need all six benchmarks in one run: do not filter)");
    }
}
