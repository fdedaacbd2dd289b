//! Unit tests for sync deltas and signing scope, on a hand-built [`View`].

use super::*;
use crate::store::EntryRecord;

fn entry(id: &str, node: &str, revision: i64) -> EntryRecord {
    EntryRecord {
        id: id.into(),
        subject: format!("spiffe://example.org/{id}"),
        selectors: vec!["unix:uid:1".into()],
        node_selectors: vec![node.into()],
        ttl_secs: 60,
        audiences: vec![],
        networks: vec![],
        revision,
        deleted: false,
    }
}

fn view() -> View {
    let mut v = View {
        revision: 9,
        ..View::default()
    };
    for e in [
        entry("a", "join:name:n1", 3),
        entry("b", "join:name:n2", 5),
        entry("c", "join:name:n1", 8),
    ] {
        v.entries.apply(e);
    }
    for (id, revision) in [("old", 4), ("gone", 9)] {
        v.entries.apply(EntryRecord {
            deleted: true,
            ..entry(id, "join:name:n1", revision)
        });
    }
    v
}

#[test]
fn sync_is_full_at_first_then_incremental_and_always_scoped() {
    let v = view();
    let n1 = ["join:name:n1".to_owned(), "x:y:z".to_owned()];
    let ids = |r: &pb::SyncResponse| r.entries.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let full = delta(&v, 0, &n1, pb::Bundle::default());
    assert!(full.full);
    assert_eq!(ids(&full), ["a", "c"]);
    assert!(full.deleted_entry_ids.is_empty());
    let inc = delta(&v, 4, &n1, pb::Bundle::default());
    assert!(!inc.full);
    assert_eq!(ids(&inc), ["c"]);
    assert_eq!(inc.deleted_entry_ids, ["gone"]);
    // An agent ahead of the store (another store, a restore): a full resend.
    assert!(delta(&v, 99, &n1, pb::Bundle::default()).full);
    // Another node sees only its own.
    assert_eq!(
        ids(&delta(
            &v,
            0,
            &["join:name:n2".to_owned()],
            pb::Bundle::default()
        )),
        ["b"]
    );
}

#[test]
fn signing_scope_follows_node_selectors_not_what_the_agent_asks() {
    let mut v = view();
    let mut t = entry("t", "join:name:n1", 9);
    t.subject = "spiffe://example.org/ns/{k8s:ns}".into();
    v.entries.apply(t);
    let n1 = ["join:name:n1".to_owned()];
    assert!(v
        .scoped_entry("spiffe://example.org/ns/shop", &n1)
        .is_some());
    assert!(v
        .scoped_entry("spiffe://example.org/ns/shop/x", &n1)
        .is_none());
    assert!(v
        .scoped_entry("spiffe://example.org/ns/shop", &["join:name:n2".to_owned()])
        .is_none());
    let n1 = ["join:name:n1".to_owned()];
    assert!(v.scoped_entry("spiffe://example.org/a", &n1).is_some());
    assert!(v.scoped_entry("spiffe://example.org/b", &n1).is_none());
    assert!(v.scoped_entry("spiffe://example.org/nope", &n1).is_none());
}
