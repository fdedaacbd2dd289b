//! lanyard's own tokens: minted here, verified under lanyard and Choria rules,
//! and every way an attacker or a typo can break them.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Org, T0};
use lanyard_token::claims::{Claims, Constraints};
use lanyard_token::jws::{self, JwsError};
use lanyard_token::ksuid::KsuidError;
use lanyard_token::{hex, pop, Anchor, KeyPair, LeafRequest, MintError, Verifier, VerifyError};

const DAY: u64 = 86_400;

fn leaf(org: &Org, subject: &str) -> (String, KeyPair) {
    let holder = KeyPair::generate().unwrap();
    let mut req = LeafRequest::workload(subject, holder.public(), 3600);
    req.audiences = vec!["billing".into()];
    req.networks = vec!["prod".into()];
    (org.issuer().mint(&req, T0 + 10).unwrap(), holder)
}

fn payload(token: &str) -> Claims {
    serde_json::from_slice(&jws::parse(token).unwrap().payload).unwrap()
}

/// Re-signs `claims` with `key`: what a holder of that key can forge.
fn forge(claims: &Claims, key: &KeyPair) -> String {
    jws::encode(&serde_json::to_vec(claims).unwrap(), |m| key.sign(m))
}

#[test]
fn mint_verifies_under_lanyard_and_choria_rules() {
    let org = Org::new(30 * DAY, Constraints::default());
    let (token, holder) = leaf(&org, "spiffe://example.org/web");
    let v = Verifier::new(org.org.public())
        .with_audience("billing")
        .with_networks(vec!["prod".into()]);
    let ok = v.verify(&token, T0 + 20).unwrap();
    assert_eq!(ok.claims().sub.as_deref(), Some("spiffe://example.org/web"));
    assert_eq!(ok.claims().purpose, "lanyard_workload");
    assert_eq!(ok.holder(), Some(holder.public()));
    assert!(
        matches!(ok.anchor(), Anchor::Chain { public_key, .. } if *public_key == org.chain_key.public())
    );
    assert_eq!(ok.expires_at(), Some(T0 + 10 + 3600));
    // cnf carries the same key as public_key, as an OKP JWK.
    let cnf = ok.claims().cnf.as_ref().unwrap();
    assert_eq!(
        (cnf.jwk.kty.as_str(), cnf.jwk.crv.as_str()),
        ("OKP", "Ed25519")
    );
    assert_eq!(
        jws::b64url_decode(&cnf.jwk.x).unwrap(),
        holder.public().as_bytes()
    );

    Verifier::choria(org.org.public())
        .verify(&token, T0 + 20)
        .unwrap();
    // And the chain issuer token itself.
    Verifier::new(org.org.public())
        .verify(&org.chain_jwt, T0 + 20)
        .unwrap();
    Verifier::choria(org.org.public())
        .verify(&org.chain_jwt, T0 + 20)
        .unwrap();

    // Proof of possession with the holder's seed, and not with anyone else's.
    let sig = pop::prove(&holder, b"server-nonce-1").unwrap();
    ok.check_proof(b"server-nonce-1", &sig).unwrap();
    assert_eq!(
        ok.check_proof(b"server-nonce-2", &sig),
        Err(lanyard_token::ProofError::Invalid)
    );
    let other = pop::prove(&org.chain_key, b"server-nonce-1").unwrap();
    assert_eq!(
        ok.check_proof(b"server-nonce-1", &other),
        Err(lanyard_token::ProofError::Invalid)
    );
}

#[test]
fn wrong_org_is_refused() {
    let org = Org::new(30 * DAY, Constraints::default());
    let (token, _) = leaf(&org, "spiffe://example.org/web");
    let other = KeyPair::generate().unwrap().public();
    assert_eq!(
        Verifier::new(other).verify(&token, T0 + 20).unwrap_err(),
        VerifyError::ChainNotSignedByOrg
    );
    assert_eq!(
        Verifier::choria(other).verify(&token, T0 + 20).unwrap_err(),
        VerifyError::ChainNotSignedByOrg
    );
}

#[test]
fn expired_chain_cannot_extend_its_leaves() {
    // Choria's hole: the chain issuer expires at T0+1d, but its key still works.
    // It mints a leaf claiming issexp and exp a year out.
    let org = Org::new(DAY, Constraints::default());
    let (token, _) = leaf(&org, "spiffe://example.org/web");
    let mut claims = payload(&token);
    let later = T0 + 365 * DAY;
    let now = T0 + 2 * DAY;
    claims.issexp = Some(later);
    claims.exp = Some(later);
    claims.iat = Some(now);
    claims.nbf = Some(now);
    let jti = lanyard_token::Ksuid::generate(now).unwrap().to_string();
    let org_tcs = claims
        .tcs
        .as_ref()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let chain_sig = org.chain_key.sign(format!("{jti}.{org_tcs}").as_bytes());
    claims.tcs = Some(format!("{org_tcs}.{}", hex::encode(&chain_sig)));
    claims.jti = Some(jti);
    let forged = forge(&claims, &org.chain_key);

    // Plain Choria rules accept it: this is the hole.
    Verifier::choria(org.org.public())
        .verify(&forged, now)
        .unwrap();
    // lanyard's org-signed grant pins the chain expiry.
    assert_eq!(
        Verifier::new(org.org.public())
            .verify(&forged, now)
            .unwrap_err(),
        VerifyError::ChainExpiryMismatch {
            issexp: later,
            granted: T0 + DAY
        }
    );
    // Editing the grant's expiry too breaks the org signature.
    claims.lanyard_chain.as_mut().unwrap().exp = later;
    let forged = forge(&claims, &org.chain_key);
    assert_eq!(
        Verifier::new(org.org.public())
            .verify(&forged, now)
            .unwrap_err(),
        VerifyError::ChainNotSignedByOrg
    );
    // And minting through the API is refused once the chain has expired.
    let holder = KeyPair::generate().unwrap().public();
    let err = org
        .issuer()
        .mint(
            &LeafRequest::workload("spiffe://example.org/web", holder, 60),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, MintError::IssuerExpired { .. }), "{err}");
}

#[test]
fn leaves_expire_with_their_chain() {
    let org = Org::new(DAY, Constraints::default());
    let holder = KeyPair::generate().unwrap().public();
    let issuer = org.issuer();
    let mut req = LeafRequest::workload("spiffe://example.org/web", holder, 2 * DAY);
    let err = issuer.mint(&req, T0).unwrap_err();
    assert!(
        matches!(err, MintError::BeyondIssuerExpiry { issuer_exp, .. } if issuer_exp == T0 + DAY),
        "{err}"
    );
    req.clamp_to_issuer = true;
    let token = issuer.mint(&req, T0).unwrap();
    assert_eq!(payload(&token).exp, Some(T0 + DAY));
    let v = Verifier::new(org.org.public());
    v.verify(&token, T0 + DAY - 1).unwrap();
    assert!(matches!(
        v.verify(&token, T0 + DAY).unwrap_err(),
        VerifyError::Expired { .. }
    ));
    assert!(matches!(
        v.verify(&token, T0 - 3600).unwrap_err(),
        VerifyError::NotYetValid { .. }
    ));
}

#[test]
fn constraints_bind_mint_and_verify() {
    let c = Constraints {
        subject_prefixes: vec!["spiffe://example.org/ns/prod".into()],
        purposes: vec!["lanyard_workload".into()],
        networks: vec!["prod".into()],
    };
    let org = Org::new(30 * DAY, c);
    let issuer = org.issuer();
    let holder = KeyPair::generate().unwrap().public();
    let mut req = LeafRequest::workload("spiffe://example.org/ns/prod/web", holder, 60);
    req.networks = vec!["prod".into()];
    let good = issuer.mint(&req, T0).unwrap();
    Verifier::new(org.org.public())
        .verify(&good, T0 + 1)
        .unwrap();

    let mut outside = req.clone();
    outside.subject = "spiffe://example.org/ns/production/web".into();
    assert!(matches!(
        issuer.mint(&outside, T0),
        Err(MintError::Constraint(_))
    ));
    let mut no_net = req.clone();
    no_net.networks.clear();
    assert!(matches!(
        issuer.mint(&no_net, T0),
        Err(MintError::Constraint(_))
    ));
    let mut other_net = req.clone();
    other_net.networks = vec!["prod".into(), "dev".into()];
    assert!(matches!(
        issuer.mint(&other_net, T0),
        Err(MintError::Constraint(_))
    ));
    let mut agent = req.clone();
    agent.purpose = "lanyard_agent".into();
    assert!(matches!(
        issuer.mint(&agent, T0),
        Err(MintError::Constraint(_))
    ));

    // The chain key signing around the API is caught by the verifier.
    let mut claims = payload(&good);
    claims.sub = Some("spiffe://example.org/ns/dev/db".into());
    let forged = forge(&claims, &org.chain_key);
    assert!(matches!(
        Verifier::new(org.org.public())
            .verify(&forged, T0 + 1)
            .unwrap_err(),
        VerifyError::Constraint(_)
    ));
}

#[test]
fn audience_network_and_cnf_checks() {
    let org = Org::new(30 * DAY, Constraints::default());
    let (token, _) = leaf(&org, "urn:lanyard:gateway-7");
    let v = Verifier::new(org.org.public());
    v.verify(&token, T0 + 20).unwrap();
    assert!(matches!(
        v.clone()
            .with_audience("payments")
            .verify(&token, T0 + 20)
            .unwrap_err(),
        VerifyError::AudienceMismatch { .. }
    ));
    assert!(matches!(
        v.clone()
            .with_networks(vec!["dev".into()])
            .verify(&token, T0 + 20)
            .unwrap_err(),
        VerifyError::NetworkNotAccepted { .. }
    ));
    let mut claims = payload(&token);
    claims.cnf = Some(lanyard_token::Confirmation::for_key(
        &KeyPair::generate().unwrap().public(),
    ));
    assert_eq!(
        v.verify(&forge(&claims, &org.chain_key), T0 + 20)
            .unwrap_err(),
        VerifyError::ConfirmationMismatch
    );
}

#[test]
fn mint_refuses_bad_requests() {
    let org = Org::new(30 * DAY, Constraints::default());
    let issuer = org.issuer();
    let holder = KeyPair::generate().unwrap().public();
    for bad in ["", "web", "spiffe://example.org/a//b", "https://x/y"] {
        let err = issuer
            .mint(&LeafRequest::workload(bad, holder, 60), T0)
            .unwrap_err();
        assert!(matches!(err, MintError::Subject(_)), "{bad}: {err}");
    }
    assert!(matches!(
        issuer.mint(&LeafRequest::workload("spiffe://e/x", holder, 0), T0),
        Err(MintError::ZeroValidity)
    ));
    // A seed that is not the chain issuer's.
    let err =
        lanyard_token::ChainIssuer::new(&org.chain_jwt, KeyPair::generate().unwrap()).unwrap_err();
    assert!(matches!(err, MintError::KeyMismatch { .. }));
    // A leaf is not a chain issuer.
    let (leaf_token, holder_key) = leaf(&org, "spiffe://example.org/web");
    assert!(matches!(
        lanyard_token::ChainIssuer::new(&leaf_token, holder_key),
        Err(MintError::NotAChainIssuer(_))
    ));
}

/// Malformed input: a clear error, never a panic.
#[test]
fn malformed_inputs_get_clear_errors() {
    let org = Org::new(30 * DAY, Constraints::default());
    let (token, _) = leaf(&org, "spiffe://example.org/web");
    let v = Verifier::new(org.org.public());
    let vc = Verifier::choria(org.org.public());
    let b64 = |s: &str| jws::b64url(s.as_bytes());
    let sig = jws::b64url(&[0; 64]);

    let check = |input: &str, want: &dyn Fn(&VerifyError) -> bool, what: &str| {
        for verifier in [&v, &vc] {
            let err = verifier.verify(input, T0 + 20).unwrap_err();
            assert!(want(&err), "{what}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
        }
    };
    check(
        "",
        &|e| *e == VerifyError::Malformed(JwsError::Empty),
        "empty",
    );
    let huge = "a".repeat(1 << 20);
    check(
        &huge,
        &|e| matches!(e, VerifyError::Malformed(JwsError::TooLarge(_))),
        "1 MiB",
    );
    check(
        "@@@.@@@.@@@",
        &|e| matches!(e, VerifyError::Malformed(JwsError::Base64 { .. })),
        "base64",
    );
    let array = format!("{}.{}.{sig}", b64(jws::HEADER_JSON), b64("[1,2]"));
    check(
        &array,
        &|e| matches!(e, VerifyError::Malformed(JwsError::Json { .. })),
        "JSON array",
    );
    let string = format!("{}.{}.{sig}", b64(jws::HEADER_JSON), b64("\"x\""));
    check(
        &string,
        &|e| matches!(e, VerifyError::Malformed(JwsError::Json { .. })),
        "JSON string",
    );
    let parts: Vec<&str> = token.split('.').collect();
    for alg in ["none", "HS256"] {
        let t = format!(
            "{}.{}.{}",
            b64(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
            parts[1],
            parts[2]
        );
        check(
            &t,
            &|e| *e == VerifyError::Malformed(JwsError::UnsupportedAlgorithm(alg.into())),
            alg,
        );
    }
    let unsigned = format!("{}.{}.", b64(r#"{"alg":"none"}"#), parts[1]);
    check(
        &unsigned,
        &|e| matches!(e, VerifyError::Malformed(_)),
        "alg none, empty signature",
    );

    // Claim-level damage, re-signed by the chain key so only the claim rule can catch it.
    let claims = payload(&token);
    let resign = |f: &dyn Fn(&mut Claims)| {
        let mut c = claims.clone();
        f(&mut c);
        forge(&c, &org.chain_key)
    };
    let upper = resign(&|c| c.public_key = c.public_key.as_ref().map(|k| k.to_uppercase()));
    let err = v.verify(&upper, T0 + 20).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::InvalidClaim {
                claim: "public_key",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("lowercase"), "{err}");
    let upper_tcs = resign(&|c| c.tcs = c.tcs.as_ref().map(|k| k.to_uppercase()));
    assert!(matches!(
        v.verify(&upper_tcs, T0 + 20).unwrap_err(),
        VerifyError::InvalidClaim { claim: "tcs", .. }
    ));
    let three = resign(&|c| c.tcs = c.tcs.as_ref().map(|k| format!("{k}.abcd")));
    check(
        &three,
        &|e| matches!(e, VerifyError::InvalidClaim { claim: "tcs", reason } if reason.contains("found 3")),
        "tcs 3 parts",
    );
    let short_jti = resign(&|c| c.jti = Some("3MVUmuoA6KiC9vfUlPWtgWZks".into()));
    check(
        &short_jti,
        &|e| *e == VerifyError::Ksuid(KsuidError::WrongLength(25)),
        "short KSUID",
    );
    let other_time =
        resign(&|c| c.jti = Some(lanyard_token::Ksuid::generate(T0 + 99).unwrap().to_string()));
    check(
        &other_time,
        &|e| *e == VerifyError::IdNotBasedOnIssuedTime,
        "KSUID time != iat",
    );
    let no_issexp = resign(&|c| c.issexp = None);
    check(
        &no_issexp,
        &|e| *e == VerifyError::MissingClaim("issexp"),
        "no issexp",
    );
    let float_exp = {
        let mut j = serde_json::to_value(&claims).unwrap();
        j["exp"] = serde_json::json!(1.5e9);
        jws::encode(&serde_json::to_vec(&j).unwrap(), |m| org.chain_key.sign(m))
    };
    check(
        &float_exp,
        &|e| matches!(e, VerifyError::Claims(_)),
        "float exp",
    );
    let unknown_purpose = resign(&|c| c.purpose = "root".into());
    assert_eq!(
        v.verify(&unknown_purpose, T0 + 20).unwrap_err(),
        VerifyError::UnknownPurpose("root".into())
    );
}

/// Finding 1 at the token level: a default-role chain (a standalone gateway's)
/// cannot make an agent credential, neither through `mint` nor by re-signing
/// a leaf around it; an issuer-role chain can.
#[test]
fn attacker_only_an_issuer_chain_vouches_for_an_agent() {
    let holder = KeyPair::generate().unwrap().public();
    let mut req = LeafRequest::workload("spiffe://example.org/lanyard/agent/join/n1", holder, 60);
    req.purpose = "lanyard_agent".into();

    let gateway = Org::new(30 * DAY, Constraints::default());
    assert!(matches!(
        gateway.issuer().mint(&req, T0),
        Err(MintError::RoleMissing { .. })
    ));
    // The gateway's workload leaf, re-purposed and re-signed with its seed.
    let workload = LeafRequest::workload("spiffe://example.org/lanyard/agent/join/n1", holder, 60);
    let good = gateway.issuer().mint(&workload, T0).unwrap();
    let mut claims = payload(&good);
    claims.purpose = "lanyard_agent".into();
    let forged = forge(&claims, &gateway.chain_key);
    assert!(matches!(
        Verifier::new(gateway.org.public())
            .verify(&forged, T0 + 1)
            .unwrap_err(),
        VerifyError::RoleMissing { .. }
    ));
    // Granting roles in a v1 grant (or editing them in) breaks the org signature.
    let mut claims = payload(&good);
    claims.purpose = "lanyard_agent".into();
    claims.lanyard_chain.as_mut().unwrap().roles = vec!["issuer".into()];
    let forged = forge(&claims, &gateway.chain_key);
    assert!(Verifier::new(gateway.org.public())
        .verify(&forged, T0 + 1)
        .is_err());
    claims.lanyard_chain.as_mut().unwrap().v = 2;
    let forged = forge(&claims, &gateway.chain_key);
    assert_eq!(
        Verifier::new(gateway.org.public())
            .verify(&forged, T0 + 1)
            .unwrap_err(),
        VerifyError::ChainNotSignedByOrg
    );

    let issuer = Org::with_roles(30 * DAY, Constraints::default(), &["issuer"]);
    let agent = issuer.issuer().mint(&req, T0).unwrap();
    let v = Verifier::new(issuer.org.public())
        .verify(&agent, T0 + 1)
        .unwrap();
    assert!(v.has_role("issuer"));
}

/// Finding 4: a Choria purpose is no way around the subject prefixes.
#[test]
fn attacker_choria_purposes_cannot_escape_a_prefix() {
    let c = Constraints {
        subject_prefixes: vec!["spiffe://example.org/web".into()],
        ..Constraints::default()
    };
    let org = Org::new(30 * DAY, c);
    let holder = KeyPair::generate().unwrap().public();
    let good = org
        .issuer()
        .mint(
            &LeafRequest::workload("spiffe://example.org/web/api", holder, 60),
            T0,
        )
        .unwrap();
    for purpose in ["choria_client_id", "choria_server", "lanyard_workload"] {
        for sub in [
            "spiffe://example.org/web/../admin",
            "spiffe://example.org/web//admin",
            "spiffe://example.org/web/%2e%2e/admin",
            "spiffe://example.org/web:admin",
        ] {
            let mut req = LeafRequest::workload(sub, holder, 60);
            req.purpose = purpose.into();
            assert!(org.issuer().mint(&req, T0).is_err(), "{purpose} {sub}");
            let mut claims = payload(&good);
            claims.purpose = purpose.into();
            claims.sub = Some(sub.into());
            let forged = forge(&claims, &org.chain_key);
            assert!(
                Verifier::new(org.org.public())
                    .verify(&forged, T0 + 1)
                    .is_err(),
                "{purpose} {sub}"
            );
        }
    }
}

/// The second review: a constrained chain's seed signs an in-prefix `sub`
/// beside `callerid: choria=admin`, which Choria consumers read instead.
#[test]
fn attacker_choria_name_claims_must_equal_sub() {
    let c = Constraints {
        subject_prefixes: vec!["spiffe://example.org/web".into()],
        ..Constraints::default()
    };
    let org = Org::new(30 * DAY, c);
    let holder = KeyPair::generate().unwrap().public();
    let mut req = LeafRequest::workload("spiffe://example.org/web/api", holder, 60);
    req.purpose = "choria_client_id".into();
    let good = org.issuer().mint(&req, T0).unwrap();
    Verifier::new(org.org.public())
        .verify(&good, T0 + 1)
        .unwrap();
    for (name, purpose) in [
        ("callerid", "choria_client_id"),
        ("identity", "choria_server"),
    ] {
        let mut claims = payload(&good);
        claims.purpose = purpose.into();
        claims.extra.insert(name.into(), "choria=admin".into());
        let forged = forge(&claims, &org.chain_key);
        assert!(
            Verifier::new(org.org.public())
                .verify(&forged, T0 + 1)
                .is_err(),
            "{name}"
        );
    }
}
