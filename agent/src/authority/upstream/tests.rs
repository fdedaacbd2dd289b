#![allow(clippy::unwrap_used)]
use super::sync::{accept_deny_list, backoff};
use super::*;

#[test]
fn backoff_doubles_to_a_cap_with_jitter_so_a_fleet_spreads_out() {
    for (failures, cap_ms) in [
        (1u32, 1000u64),
        (2, 2000),
        (3, 4000),
        (6, 32_000),
        (7, 60_000),
        (50, 60_000),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = backoff(failures).as_millis() as u64;
            assert!(d >= cap_ms / 2 && d < cap_ms, "failures {failures}: {d} ms");
            seen.insert(d);
        }
        // Jitter: 200 agents do not pick the same delay.
        assert!(
            seen.len() > 50,
            "failures {failures}: only {} distinct delays",
            seen.len()
        );
    }
}

#[test]
fn deny_lists_from_the_issuer_never_roll_back_nor_come_from_a_revoked_chain() {
    use lanyard_token::deny::{sign_by_chain, Denied};
    use lanyard_token::{delegate, ChainIssuer, DelegateRequest, DenyListError};
    let now = crate::clock::now();
    let org = KeyPair::generate().unwrap();
    let chain_key = KeyPair::generate().unwrap();
    let req = DelegateRequest {
        name: "replica".into(),
        validity_secs: 3600,
        roles: vec!["issuer".into()],
        ..Default::default()
    };
    let jwt = delegate(&org, &chain_key.public(), &req, now).unwrap();
    let chain = ChainIssuer::new(&jwt, chain_key).unwrap();
    let mut denied = Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let newer = sign_by_chain(&chain, &denied, 9, now).unwrap();
    let older = sign_by_chain(&chain, &denied, 4, now).unwrap();

    let held = accept_deny_list(&newer, &org.public(), None, &[]).unwrap();
    assert!(matches!(
        accept_deny_list(&older, &org.public(), Some(&held), &[]),
        Err(DenyListError::Rollback { got: 4, held: 9 })
    ));
    // The same serial again is fine (a reconnect).
    assert!(accept_deny_list(&newer, &org.public(), Some(&held), &[]).is_ok());
    // Once the signing chain is known to be revoked, its lists are refused.
    let revoked = vec![chain.jti().to_owned()];
    assert!(matches!(
        accept_deny_list(&newer, &org.public(), None, &revoked),
        Err(DenyListError::BadChain(_))
    ));
    // Another org's key refuses it outright.
    let other = KeyPair::generate().unwrap().public();
    assert!(accept_deny_list(&newer, &other, None, &[]).is_err());
}

#[tokio::test]
async fn a_session_is_replaced_before_it_ends() {
    let ch = tonic::transport::Endpoint::from_static("http://x").connect_lazy();
    let l = Link {
        channel: ch,
        session: "s".into(),
        opened_at: 1000,
        expires_at: 1000 + 3600,
    };
    assert!(l.usable(1000));
    assert!(l.usable(1000 + 3600 - 31));
    assert!(!l.usable(1000 + 3600 - 30));
    // Short sessions keep a quarter of their life in hand.
    let short = Link {
        expires_at: 1008,
        ..l
    };
    assert!(short.usable(1005));
    assert!(!short.usable(1006));
}

/// An upstream authority loaded from `data_dir` as after a restart, with the
/// sync state `synced` on disk.
fn restarted(dir: &std::path::Path, org: &KeyPair, synced: &Synced) -> UpstreamAuthority {
    std::fs::write(dir.join("org.public"), org.public().to_hex()).unwrap();
    std::fs::write(dir.join(SYNCED), serde_json::to_vec(synced).unwrap()).unwrap();
    let cfg = UpstreamConfig {
        addresses: vec!["127.0.0.1:1".into()],
        org_public: dir.join("org.public"),
        evidence: crate::config::NodeEvidence::JoinToken("t".into()),
        issuer_id: None,
        legacy_issuer: false,
    };
    UpstreamAuthority::load(cfg, "example.org", dir.to_owned()).unwrap()
}

#[test]
fn a_jwt_svid_revoked_by_its_id_stays_revoked_after_a_restart() {
    // The attacker holds a JWT-SVID the org has since revoked by jti. The
    // agent synced that deny list, then restarted: ValidateJWTSVID must still
    // refuse it, and `denied_jtis` (what `app::build` purges a restored cache
    // of) names it. The purge itself and the order of purge and persist are
    // not tested here.
    let dir = std::env::temp_dir().join(format!("lanyard-upstream-jti-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let org = KeyPair::generate().unwrap();
    let signer = crate::svid::JwtSigner::derive(&KeyPair::generate().unwrap()).unwrap();
    let now = crate::clock::now();
    let aud = vec!["svc".to_owned()];
    let revoked = signer
        .sign("spiffe://example.org/web", &aud, now, now + 600, None)
        .unwrap();
    let fine = signer
        .sign("spiffe://example.org/web", &aud, now, now + 600, None)
        .unwrap();
    let jti = |t: &str| {
        let p = t.split('.').nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).unwrap(),
        )
        .unwrap();
        v["jti"].as_str().unwrap().to_owned()
    };
    let synced = Synced {
        trust_domain: "example.org".into(),
        jwks: serde_json::json!({ "keys": [signer.jwk()] }).to_string(),
        denied_jtis: vec![jti(&revoked)],
        ..Synced::default()
    };
    let up = restarted(&dir, &org, &synced);
    assert!(up.validate_jwt_svid(&fine, "svc", now).is_ok());
    assert_eq!(
        up.validate_jwt_svid(&revoked, "svc", now),
        Err(crate::svid::JwtSvidError::Revoked(jti(&revoked)))
    );
    assert_eq!(
        up.denied_jtis().jtis,
        std::iter::once(jti(&revoked)).collect()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
