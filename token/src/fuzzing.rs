//! Entry points shared by the cargo-fuzz targets and the corpus replay test, so
//! that a crash found by the fuzzer replays as an ordinary `cargo test`.

use std::path::Path;

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

/// The seed of the org key the deny-list fuzz seeds are signed with. A fuzzing
/// key, public on purpose: it exists so the fuzzer reaches the accepting paths.
pub const DENY_ORG_SEED: [u8; 32] = [0x42; 32];
/// When the deny-list fuzz seeds were signed (their chain is valid then).
pub const DENY_NOW: u64 = 1_800_000_000;

/// The public key of [`DENY_ORG_SEED`], derived once.
pub fn deny_org() -> PublicKey {
    static ORG: std::sync::OnceLock<PublicKey> = std::sync::OnceLock::new();
    *ORG.get_or_init(|| crate::KeyPair::from_seed(&DENY_ORG_SEED).public())
}

/// Parses `data` as a deny list against the fuzzing org key, both as the org's
/// own list and as a chain issuer's, and checks what an accepted list promises.
/// Panics only on a parser panic or a broken invariant.
pub fn deny_list_bytes(data: &[u8]) {
    let org = deny_org();
    let text = String::from_utf8_lossy(data);
    let Ok(list) = crate::deny::parse(&text, &org, DENY_NOW) else {
        return;
    };
    // The same list is never a rollback of itself, and what it names it denies.
    assert!(crate::deny::newer(Some(&list), list.clone()).is_ok());
    for c in &list.denied().chains {
        assert!(list.denies_chain(c));
    }
    for j in &list.denied().jtis {
        assert!(list.denies_jti(j));
    }
    // A verifier holding it still verifies (or refuses) without panicking.
    let _ = Verifier::new(org)
        .with_deny_list(list.clone())
        .verify(&text, DENY_NOW);
    // Another org never accepts it.
    if let Ok(other) = PublicKey::from_hex(ORG_HEX, false) {
        assert!(crate::deny::parse(&text, &other, DENY_NOW).is_err());
    }
}

/// Feeds every committed input of `target` in the fuzz crate at `fuzz_dir`
/// (hand-made seeds, the minimised corpus and crash repros) to `run`, and says
/// how many there were. Every crate's replay test uses this with its own entry
/// points. A file that cannot be read is an error, never a skip.
pub fn replay(fuzz_dir: &Path, target: &str, run: fn(&[u8])) -> std::io::Result<usize> {
    let mut n = 0;
    for dir in ["seeds", "corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(dir).join(target)) else {
            continue;
        };
        for e in entries {
            let path = e?.path();
            if path.file_name().is_some_and(|f| f != ".keep") {
                run(&std::fs::read(&path)?);
                n += 1;
            }
        }
    }
    Ok(n)
}
