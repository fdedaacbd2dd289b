//! Entry points shared by the cargo-fuzz targets and the corpus replay test, so
//! that a crash found by the fuzzer replays as an ordinary `cargo test`.

use crate::{pop, Ksuid, PublicKey, Verifier};

/// The org key the fuzz corpus was minted with (the Choria vectors' org issuer).
const ORG_HEX: &str = "bccd00d522a5c6293bb32e58dbd416229a9b775945f99dcd4bbd17d70b23de74";
/// A time at which the corpus tokens are valid.
const NOW: u64 = 1_795_500_000;

/// Parses and verifies `data` under both rule sets, and runs the other parsers on
/// it. Panics only if a parser panics, which is the bug the fuzzer looks for.
pub fn verify_bytes(data: &[u8]) {
    let Ok(org) = PublicKey::from_hex(ORG_HEX, false) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    for v in [Verifier::new(org), Verifier::choria(org)] {
        if let Ok(t) = v.verify(&text, NOW) {
            // A verified token must be internally consistent.
            let _ = t.check_proof(b"nonce", "AAAA");
            assert!(t.expires_at().is_none_or(|e| e > NOW));
        }
    }
    let _ = Ksuid::parse(&text);
    let _ = crate::duration::parse_secs(&text);
    let _ = crate::subject::validate(&text);
    let _ = pop::check(&org, data, &text);
}
