//! Property tests: mint → verify round-trips, and any flipped byte is caught.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Org, T0};
use lanyard_token::claims::{Claims, Constraints};
use lanyard_token::{hex, jws, KeyPair, LeafRequest, Verifier};
use proptest::prelude::*;

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-z0-9.-]{1,20}", prop::collection::vec(segment(), 0..4)).prop_map(|(td, path)| path
            .iter()
            .fold(format!("spiffe://{td}"), |acc, s| format!("{acc}/{s}"))),
        // The URN grammar (token/src/subject.rs): a 2-32 character NID, then
        // ':'-separated segments, none empty, '.' or '..'.
        (
            "[a-z][a-z0-9]{1,7}",
            prop::collection::vec(
                "[a-zA-Z0-9._~@+=-]{1,8}".prop_filter("not . or ..", |s| s != "." && s != ".."),
                1..4
            )
        )
            .prop_map(|(nid, nss)| format!("urn:{nid}:{}", nss.join(":"))),
    ]
}

struct Fixture {
    org: Org,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| Fixture {
        org: Org::new(400 * 86_400, Constraints::default()),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn mint_verify_round_trip(
        sub in subject(),
        auds in prop::collection::vec("[a-z]{1,10}", 0..3),
        nets in prop::collection::vec("[a-z]{1,10}", 0..3),
        validity in 1u64..(300 * 86_400),
        age in 0u64..300 * 86_400,
        attr in "[ -~]{0,30}",
    ) {
        let f = fixture();
        let holder = KeyPair::generate().unwrap();
        let mut req = LeafRequest::workload(sub.clone(), holder.public(), validity);
        req.audiences = auds.clone();
        req.networks = nets.clone();
        req.attrs.insert("note".into(), attr.clone().into());
        let token = f.org.issuer().mint(&req, T0).unwrap();
        let now = T0 + age;
        for v in [Verifier::new(f.org.org.public()), Verifier::choria(f.org.org.public())] {
            let res = v.verify(&token, now);
            if age < validity {
                let ok = res.unwrap();
                prop_assert_eq!(ok.claims().sub.as_deref(), Some(sub.as_str()));
                prop_assert_eq!(&ok.claims().aud, &auds);
                prop_assert_eq!(&ok.claims().networks, &nets);
                prop_assert_eq!(ok.claims().attrs.get("note"), Some(&serde_json::Value::from(attr.clone())));
                prop_assert_eq!(ok.holder(), Some(holder.public()));
            } else {
                let expired = matches!(res, Err(lanyard_token::VerifyError::Expired { .. }));
                prop_assert!(expired);
            }
        }
    }

    /// Any character of header, payload or signature replaced by another base64url
    /// character: both rule sets refuse it.
    #[test]
    fn flipped_token_byte_fails(pos in any::<prop::sample::Index>(), with in any::<prop::sample::Index>()) {
        let f = fixture();
        let holder = KeyPair::generate().unwrap().public();
        let token = f.org.issuer().mint(&LeafRequest::workload("spiffe://example.org/web", holder, 3600), T0).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        let mut c = B64URL[with.index(B64URL.len())];
        if c == bytes[i] || bytes[i] == b'.' {
            c = if bytes[i] == b'A' { b'B' } else { b'A' };
        }
        bytes[i] = c;
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert!(Verifier::new(f.org.org.public()).verify(&flipped, T0 + 1).is_err(), "lanyard accepted flip at {}", i);
        prop_assert!(Verifier::choria(f.org.org.public()).verify(&flipped, T0 + 1).is_err(), "choria accepted flip at {}", i);
    }

    /// Any hex digit of `tcs` changed, and the JWT re-signed by the chain key so
    /// that only the chain checks can notice: both rule sets refuse it.
    #[test]
    fn flipped_tcs_byte_fails(pos in any::<prop::sample::Index>(), delta in 1u8..16) {
        let f = fixture();
        let holder = KeyPair::generate().unwrap().public();
        let token = f.org.issuer().mint(&LeafRequest::workload("spiffe://example.org/web", holder, 3600), T0).unwrap();
        let mut claims: Claims = serde_json::from_slice(&jws::parse(&token).unwrap().payload).unwrap();
        let tcs = claims.tcs.clone().unwrap();
        let digits: Vec<usize> = tcs.char_indices().filter(|(_, c)| *c != '.').map(|(i, _)| i).collect();
        let i = digits[pos.index(digits.len())];
        let old = u8::from_str_radix(&tcs[i..=i], 16).unwrap();
        let new = hex::encode(&[(old + delta) % 16]);
        let mut flipped = tcs.clone();
        flipped.replace_range(i..=i, &new[1..]);
        prop_assert_ne!(&flipped, &tcs);
        claims.tcs = Some(flipped);
        let forged = jws::encode(&serde_json::to_vec(&claims).unwrap(), |m| f.org.chain_key.sign(m));
        prop_assert!(Verifier::new(f.org.org.public()).verify(&forged, T0 + 1).is_err());
        prop_assert!(Verifier::choria(f.org.org.public()).verify(&forged, T0 + 1).is_err());
    }

    /// Arbitrary bytes never panic the verifier.
    #[test]
    fn arbitrary_input_never_panics(s in ".{0,400}") {
        let f = fixture();
        let _ = Verifier::new(f.org.org.public()).verify(&s, T0);
        let _ = Verifier::choria(f.org.org.public()).verify(&s, T0);
    }
}
