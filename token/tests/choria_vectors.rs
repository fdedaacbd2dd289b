//! Every vector in `interop/choria` gets the verdict of Choria's own verifier
//! (choria-io/tokens v0.0.4), through the library API.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{now, public, read};
use lanyard_token::jws::JwsError;
use lanyard_token::{pop, Verifier, VerifyError};

/// What the reference said, reduced to the rule it names.
#[derive(Debug, PartialEq)]
enum Reference {
    Ok(String),
    BadSignature,
    ChainNotSignedByOrg,
    InvalidChainSignature,
    Expired,
}

fn reference(verdict: &str) -> Reference {
    if let Some(rest) = verdict.strip_prefix("OK ") {
        // `callerid=…` or `identity=…`; the first field names the subject.
        let first = rest.split_whitespace().next().unwrap();
        return Reference::Ok(first.split_once('=').unwrap().1.to_owned());
    }
    if verdict.contains("ed25519: verification error") {
        Reference::BadSignature
    } else if verdict.contains("chain issuer credentials not signed by org issuer") {
        Reference::ChainNotSignedByOrg
    } else if verdict.contains("invalid chain signature") {
        Reference::InvalidChainSignature
    } else if verdict.contains("token is expired") {
        Reference::Expired
    } else {
        panic!("unknown reference verdict {verdict:?}")
    }
}

fn ours(result: Result<lanyard_token::VerifiedToken, VerifyError>) -> Reference {
    match result {
        Ok(t) => Reference::Ok(t.claims().display_subject().unwrap().to_owned()),
        Err(VerifyError::BadSignature) => Reference::BadSignature,
        Err(VerifyError::ChainNotSignedByOrg) => Reference::ChainNotSignedByOrg,
        Err(VerifyError::InvalidChainSignature) => Reference::InvalidChainSignature,
        Err(VerifyError::Expired { .. }) => Reference::Expired,
        Err(other) => panic!("verdict with no reference counterpart: {other}"),
    }
}

fn expected_lines() -> Vec<(String, String, String)> {
    read("chain/EXPECTED_tokens_v0.0.4.txt")
        .lines()
        .filter(|l| l.contains(".jwt "))
        .map(|l| {
            let mut it = l.split_whitespace();
            let (file, key) = (it.next().unwrap(), it.next().unwrap());
            (
                file.to_owned(),
                key.to_owned(),
                it.collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

#[test]
fn every_chain_vector_matches_choria_v004() {
    let org = public("chain/org_issuer.public");
    let wrong = public("chain/unrelated.public");
    let lines = expected_lines();
    // Two verdicts (org, wrong) for every token file: none is skipped.
    let jwt_files = std::fs::read_dir(common::vectors().join("chain"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".jwt")
        })
        .count();
    assert_eq!(lines.len(), 2 * jwt_files);
    for (file, key, verdict) in lines {
        let token = read(&format!("chain/{file}"));
        let verifier = Verifier::choria(match key.as_str() {
            "org" => org,
            "wrong" => wrong,
            other => panic!("unknown key column {other}"),
        });
        let got = ours(verifier.verify(lanyard_token::token_text(&token), now()));
        assert_eq!(got, reference(&verdict), "{file} with {key}");
    }
}

#[test]
fn lanyard_rules_refuse_plain_choria_chains() {
    // No org-signed chain grant: Choria's chain-expiry hole is open on these.
    let org = public("chain/org_issuer.public");
    for file in ["chain_issuer.jwt", "client.jwt", "server.jwt"] {
        let err = Verifier::new(org)
            .verify(read(&format!("chain/{file}")).trim(), now())
            .unwrap_err();
        assert_eq!(err, VerifyError::MissingChainGrant, "{file}");
    }
    // Signed directly by the org with a free-form iss: only Choria accepts those.
    let err = Verifier::new(org)
        .verify(read("chain/server_direct.jwt").trim(), now())
        .unwrap_err();
    assert!(matches!(err, VerifyError::UnsupportedIssuer(_)), "{err}");
}

#[test]
fn nonce_signature_vector() {
    let nonce = read("chain/nonce.txt");
    let sig = read("chain/nonce.sig");
    pop::check(&public("chain/client.public"), nonce.as_bytes(), &sig).unwrap();
    assert_eq!(
        pop::check(&public("chain/server.public"), nonce.as_bytes(), &sig),
        Err(lanyard_token::ProofError::Invalid)
    );
    // Our signature over the same nonce with the same seed is byte-identical
    // (ed25519 is deterministic).
    let seed = lanyard_token::KeyPair::from_seed_text(&read("chain/client.seed")).unwrap();
    assert_eq!(pop::prove(&seed, nonce.as_bytes()).unwrap(), sig.trim());
}

#[test]
fn seed_files_match_their_public_files() {
    for name in [
        "org_issuer",
        "chain_issuer",
        "client",
        "server",
        "attacker",
        "unrelated",
    ] {
        let kp =
            lanyard_token::KeyPair::from_seed_text(&read(&format!("chain/{name}.seed"))).unwrap();
        assert_eq!(
            kp.public(),
            public(&format!("chain/{name}.public")),
            "{name}"
        );
        assert_eq!(
            kp.seed_text().as_str(),
            read(&format!("chain/{name}.seed")),
            "{name}"
        );
    }
}

#[test]
fn upstream_fixtures() {
    let ed = "upstream/tokens/testdata/ed25519";
    // The file ends in a newline; token_text trims it.
    let token = read(&format!("{ed}/good-provisioning.jwt"));
    assert!(token.ends_with('\n'));
    let token = lanyard_token::token_text(&token);
    let ok = Verifier::choria(public(&format!("{ed}/signer.public")))
        .verify(token, now())
        .unwrap();
    assert_eq!(ok.claims().purpose, "choria_provisioning");
    assert_eq!(
        Verifier::choria(public(&format!("{ed}/other.public")))
            .verify(token, now())
            .unwrap_err(),
        VerifyError::BadSignature
    );
    // Legacy RS256: detected and refused by name, never tried as EdDSA.
    let rsa = read("upstream/tokens/testdata/rsa/good-provisioning.jwt");
    assert_eq!(
        Verifier::choria(public(&format!("{ed}/signer.public")))
            .verify(rsa.trim(), now())
            .unwrap_err(),
        VerifyError::Malformed(JwsError::UnsupportedAlgorithm("RS256".into()))
    );
}
