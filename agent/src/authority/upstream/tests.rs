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
