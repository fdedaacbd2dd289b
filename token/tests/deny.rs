//! Signed deny lists: parsing, signatures, rollback, and their effect on verification.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Org, T0};
use lanyard_token::claims::Constraints;
use lanyard_token::deny::{self, Denied};
use lanyard_token::{jws, DenyListError, KeyPair, LeafRequest, Verifier, VerifyError};

fn jti_of(token: &str) -> String {
    let c: lanyard_token::Claims =
        serde_json::from_slice(&jws::parse(token).unwrap().payload).unwrap();
    c.jti.unwrap()
}

#[test]
fn deny_list_round_trip_and_refusals() {
    let org = KeyPair::generate().unwrap();
    let mut denied = Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let text = deny::sign(&org, &denied, 7, T0).unwrap();
    let list = deny::parse(&text, &org.public(), T0 + 10).unwrap();
    assert_eq!(list.serial(), 7);
    assert!(list.denies_jti("3MVUmuoA6KiC9vfUlPWtgWZksOh"));
    // Another org's key, a tampered payload, a token that is not a deny list.
    assert_eq!(
        deny::parse(&text, &KeyPair::generate().unwrap().public(), T0 + 10),
        Err(DenyListError::NotSignedByOrg)
    );
    let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    parts[1] = jws::b64url(br#"{"purpose":"lanyard_deny_list"}"#);
    assert_eq!(
        deny::parse(&parts.join("."), &org.public(), T0 + 10),
        Err(DenyListError::NotSignedByOrg)
    );
    let o = Org::new(86_400, Constraints::default());
    assert!(matches!(
        deny::parse(&o.chain_jwt, &o.org.public(), T0 + 10),
        Err(DenyListError::Claims(_))
    ));
    assert!(matches!(
        deny::parse("", &org.public(), T0 + 10),
        Err(DenyListError::Malformed(_))
    ));
    // Rollback.
    let older = deny::parse(
        &deny::sign(&org, &Denied::default(), 6, T0).unwrap(),
        &org.public(),
        T0 + 10,
    )
    .unwrap();
    assert!(matches!(
        deny::newer(Some(&list), older),
        Err(DenyListError::Rollback { got: 6, held: 7 })
    ));
}

#[test]
fn verifier_refuses_what_the_list_names() {
    let o = Org::new(86_400, Constraints::default());
    let holder = KeyPair::generate().unwrap().public();
    let issuer = o.issuer();
    let a = issuer
        .mint(
            &LeafRequest::workload("spiffe://example.org/a", holder, 600),
            T0,
        )
        .unwrap();
    let b = issuer
        .mint(
            &LeafRequest::workload("spiffe://example.org/b", holder, 600),
            T0,
        )
        .unwrap();

    let mut denied = Denied::default();
    denied.jtis.insert(jti_of(&a));
    let list = deny::parse(
        &deny::sign(&o.org, &denied, 1, T0).unwrap(),
        &o.org.public(),
        T0 + 10,
    )
    .unwrap();
    for v in [
        Verifier::new(o.org.public()),
        Verifier::choria(o.org.public()),
    ] {
        let v = v.with_deny_list(list.clone());
        assert!(matches!(v.verify(&a, T0 + 1), Err(VerifyError::Revoked(_))));
        v.verify(&b, T0 + 1).unwrap();
    }

    // Revoking the chain issuer revokes every leaf it minted, and the chain token itself.
    let mut denied = Denied::default();
    denied.chains.insert(jti_of(&o.chain_jwt));
    let list = deny::parse(
        &deny::sign(&o.org, &denied, 2, T0).unwrap(),
        &o.org.public(),
        T0 + 10,
    )
    .unwrap();
    let v = Verifier::new(o.org.public()).with_deny_list(list);
    for t in [&a, &b, &o.chain_jwt] {
        let err = v.verify(t, T0 + 1).unwrap_err();
        assert!(matches!(err, VerifyError::Revoked(_)), "{err}");
    }
}

#[test]
fn a_chain_issuer_signs_lists_that_verify_with_the_org_key_alone() {
    let o = Org::with_roles(86_400, Constraints::default(), &["issuer"]);
    let chain = lanyard_token::ChainIssuer::new(&o.chain_jwt, o.chain_key.clone()).unwrap();
    let mut denied = Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let text = deny::sign_by_chain(&chain, &denied, 3, T0 + 10).unwrap();
    let list = deny::parse(&text, &o.org.public(), T0 + 10).unwrap();
    assert_eq!(list.serial(), 3);
    assert_eq!(list.signer_chain(), Some(jti_of(&o.chain_jwt).as_str()));
    assert!(list.denies_jti("3MVUmuoA6KiC9vfUlPWtgWZksOh"));
    // Another org refuses it (its chain token does not verify).
    let other = KeyPair::generate().unwrap().public();
    assert!(matches!(
        deny::parse(&text, &other, T0 + 10),
        Err(DenyListError::BadChain(_))
    ));
    // A list signed by some other key but carrying this chain's token is refused.
    let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
    let forged = KeyPair::generate().unwrap();
    parts[2] = jws::b64url(&forged.sign(format!("{}.{}", parts[0], parts[1]).as_bytes()));
    assert!(matches!(
        deny::parse(&parts.join("."), &o.org.public(), T0 + 10),
        Err(DenyListError::BadChain(_))
    ));
}

/// Finding 7: a chain-signed list is judged at the verifier's time, from an
/// issuer-role chain only; its own `iat` proves nothing.
#[test]
fn attacker_lists_from_a_non_issuer_expired_or_backdated_chain_are_refused() {
    let mut denied = Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    // A standalone host's chain (default role): its seed must not revoke anything.
    let gateway = Org::new(86_400, Constraints::default());
    let text = deny::sign_by_chain(&gateway.issuer(), &denied, 99, T0 + 10).unwrap();
    let err = deny::parse(&text, &gateway.org.public(), T0 + 10).unwrap_err();
    assert!(
        matches!(&err, DenyListError::BadChain(r) if r.contains("issuer role")),
        "{err}"
    );
    // An issuer chain valid for an hour: a list it signs (or backdates to
    // inside its validity) after it expired is refused.
    let issuer = Org::with_roles(3_600, Constraints::default(), &["issuer"]);
    let backdated = deny::sign_by_chain(&issuer.issuer(), &denied, 5, T0 + 10).unwrap();
    deny::parse(&backdated, &issuer.org.public(), T0 + 10).unwrap();
    assert!(matches!(
        deny::parse(&backdated, &issuer.org.public(), T0 + 3_601),
        Err(DenyListError::BadChain(_))
    ));
    // A list of an issuer chain that its own list revokes is still parsed, but a
    // holder's revoked-chain check (agent) refuses it; covered in the agent.
}

/// An agent keeps the highest serial it has seen, and a serial means one list.
#[test]
fn attacker_an_older_or_swapped_serial_is_refused() {
    let org = KeyPair::generate().unwrap();
    let mut a = Denied::default();
    a.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let held = deny::parse(&deny::sign(&org, &a, 7, T0).unwrap(), &org.public(), T0).unwrap();
    let same = deny::parse(&deny::sign(&org, &a, 7, T0 + 1).unwrap(), &org.public(), T0).unwrap();
    assert!(
        deny::newer(Some(&held), same).is_ok(),
        "the same list again"
    );
    let swapped = deny::parse(
        &deny::sign(&org, &Denied::default(), 7, T0 + 1).unwrap(),
        &org.public(),
        T0,
    )
    .unwrap();
    assert!(matches!(
        deny::newer(Some(&held), swapped),
        Err(DenyListError::Rollback { got: 7, held: 7 })
    ));
}

/// Finding 5 at the token level: an agent on the list takes its own
/// credential and every credential that names it as `agent_id`.
#[test]
fn attacker_a_revoked_agents_credentials_are_refused() {
    let o = Org::with_roles(86_400, Constraints::default(), &["issuer"]);
    let holder = KeyPair::generate().unwrap().public();
    let agent_id = "spiffe://example.org/lanyard/agent/join_token/n1";
    let mut req = LeafRequest::workload("spiffe://example.org/w", holder, 600);
    req.agent_id = Some(agent_id.into());
    let brokered = o.issuer().mint(&req, T0).unwrap();
    let mut req = LeafRequest::workload(agent_id, holder, 600);
    req.purpose = "lanyard_agent".into();
    let own = o.issuer().mint(&req, T0).unwrap();
    let other = o
        .issuer()
        .mint(
            &LeafRequest::workload("spiffe://example.org/w", holder, 600),
            T0,
        )
        .unwrap();
    let mut denied = Denied::default();
    denied.agents.insert(agent_id.into());
    let list = deny::parse(
        &deny::sign(&o.org, &denied, 1, T0).unwrap(),
        &o.org.public(),
        T0,
    )
    .unwrap();
    let v = Verifier::new(o.org.public()).with_deny_list(list);
    for t in [&brokered, &own] {
        let err = v.verify(t, T0 + 1).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Revoked(w) if w.contains(agent_id)),
            "{err}"
        );
    }
    v.verify(&other, T0 + 1).unwrap();
}

/// The review's freeze: a compromised issuer chain signs a list with the
/// highest serial that omits itself. The list that revokes it still replaces
/// it, whatever its serial; other lower serials stay refused.
#[test]
fn attacker_a_max_serial_list_cannot_freeze_revocation() {
    let a = Org::with_roles(86_400, Constraints::default(), &["issuer"]);
    let rogue = a.issuer();
    let hostile = deny::sign_by_chain(&rogue, &Denied::default(), u64::MAX, T0).unwrap();
    let held = deny::parse(&hostile, &a.org.public(), T0).unwrap();
    let mut other = Denied::default();
    other.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let unrelated = deny::parse(
        &deny::sign(&a.org, &other, 9, T0).unwrap(),
        &a.org.public(),
        T0,
    )
    .unwrap();
    assert!(matches!(
        deny::newer(Some(&held), unrelated),
        Err(DenyListError::Rollback { .. })
    ));
    let mut revoking = Denied::default();
    revoking.chains.insert(jti_of(&a.chain_jwt));
    let revoke = deny::parse(
        &deny::sign(&a.org, &revoking, 9, T0).unwrap(),
        &a.org.public(),
        T0,
    )
    .unwrap();
    assert_eq!(deny::newer(Some(&held), revoke).unwrap().serial(), 9);
}

/// A holder's own stored list stays usable after its signer chain expired
/// (`parse_held`), while a list arriving now from that chain is refused.
#[test]
fn a_held_list_outlives_its_signer_chain() {
    let a = Org::with_roles(3_600, Constraints::default(), &["issuer"]);
    let mut denied = Denied::default();
    denied.jtis.insert("3MVUmuoA6KiC9vfUlPWtgWZksOh".into());
    let text = deny::sign_by_chain(&a.issuer(), &denied, 4, T0 + 10).unwrap();
    assert!(deny::parse(&text, &a.org.public(), T0 + 7_200).is_err());
    let held = deny::parse_held(&text, &a.org.public()).unwrap();
    assert!(held.denies_jti("3MVUmuoA6KiC9vfUlPWtgWZksOh"));
    // Still only this org's.
    assert!(deny::parse_held(&text, &KeyPair::generate().unwrap().public()).is_err());
}
