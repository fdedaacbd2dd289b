//! The entries of one [`View`](crate::state::View), indexed for signing and sync.
//!
//! Every store change publishes a new view, and every admin write waits for it.
//! So a clone shares everything (`Arc`): it copies map nodes, never an entry, and
//! a change costs in proportion to what changed. Copying 10,000 entries per
//! write made bulk loading quadratic (64–75 s for 10,000 writes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use lanyard_plugins::template::is_template;

use crate::store::EntryRecord;

/// Live entries, tombstones, and lookups by subject.
#[derive(Debug, Default, Clone)]
pub struct EntryIndex {
    /// Live entries by id (ids in order, so every replica iterates alike).
    live: BTreeMap<Arc<str>, Arc<EntryRecord>>,
    /// Deleted entry ids → revision of the deletion.
    tombstones: BTreeMap<Arc<str>, i64>,
    /// Ids of the live non-template entries of each subject, sorted.
    by_subject: HashMap<Arc<str>, Arc<[Arc<str>]>>,
    /// Ids of the live templates: matched by pattern, never by literal subject.
    templates: BTreeSet<Arc<str>>,
    /// Live entries by the revision of their last change: a sync of what changed
    /// reads only that, and a full one reads entries in the order they were
    /// made (which is also their order in memory).
    by_revision: BTreeSet<(i64, Arc<str>)>,
}

impl EntryIndex {
    /// Applies one change from the store: a new or changed entry, or a tombstone.
    pub fn apply(&mut self, change: EntryRecord) {
        let id: Arc<str> = change.id.as_str().into();
        if let Some(previous) = self.live.remove(&id) {
            self.by_revision.remove(&(previous.revision, id.clone()));
            self.unindex(&previous, &id);
        }
        if change.deleted {
            self.tombstones.insert(id, change.revision);
        } else {
            self.index(&change, &id);
            self.by_revision.insert((change.revision, id.clone()));
            self.live.insert(id, Arc::new(change));
        }
    }

    fn index(&mut self, e: &EntryRecord, id: &Arc<str>) {
        if is_template(&e.subject) {
            self.templates.insert(id.clone());
            return;
        }
        let mut ids: Vec<Arc<str>> = self
            .by_subject
            .get(e.subject.as_str())
            .map(|ids| ids.to_vec())
            .unwrap_or_default();
        if let Err(at) = ids.binary_search(id) {
            ids.insert(at, id.clone());
        }
        self.by_subject
            .insert(e.subject.as_str().into(), ids.into());
    }

    fn unindex(&mut self, e: &EntryRecord, id: &Arc<str>) {
        if is_template(&e.subject) {
            self.templates.remove(id);
            return;
        }
        let Some(ids) = self.by_subject.get(e.subject.as_str()) else {
            return;
        };
        let rest: Vec<Arc<str>> = ids.iter().filter(|i| *i != id).cloned().collect();
        if rest.is_empty() {
            self.by_subject.remove(e.subject.as_str());
        } else {
            self.by_subject
                .insert(e.subject.as_str().into(), rest.into());
        }
    }

    /// How many entries are live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no entry is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// A live entry by id.
    pub fn get(&self, id: &str) -> Option<&EntryRecord> {
        self.live.get(id).map(|e| &**e)
    }

    /// Every live entry, by id.
    pub fn live(&self) -> impl Iterator<Item = &EntryRecord> {
        self.live.values().map(|e| &**e)
    }

    /// The live entries changed after revision `since`, oldest change first.
    pub fn changed_since(&self, since: i64) -> impl Iterator<Item = &EntryRecord> {
        let from = (since.saturating_add(1), Arc::<str>::from(""));
        self.by_revision
            .range(from..)
            .filter_map(|(_, id)| self.get(id))
    }

    /// Every deleted id with the revision of its deletion.
    pub fn tombstones(&self) -> impl Iterator<Item = (&str, i64)> {
        self.tombstones.iter().map(|(id, rev)| (&**id, *rev))
    }

    /// The live non-template entries with exactly `subject`, by id.
    pub fn with_subject<'a>(&'a self, subject: &str) -> impl Iterator<Item = &'a EntryRecord> {
        self.by_subject
            .get(subject)
            .into_iter()
            .flat_map(|ids| ids.iter())
            .filter_map(|id| self.get(id))
    }

    /// The live template entries, by id.
    pub fn templates(&self) -> impl Iterator<Item = &EntryRecord> {
        self.templates.iter().filter_map(|id| self.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, subject: &str, revision: i64) -> EntryRecord {
        EntryRecord {
            id: id.into(),
            subject: subject.into(),
            selectors: vec!["unix:uid:1".into()],
            node_selectors: vec!["join:name:n".into()],
            ttl_secs: 60,
            audiences: vec![],
            networks: vec![],
            revision,
            deleted: false,
        }
    }

    fn gone(id: &str, subject: &str, revision: i64) -> EntryRecord {
        EntryRecord {
            deleted: true,
            ..entry(id, subject, revision)
        }
    }

    fn ids<'a>(it: impl Iterator<Item = &'a EntryRecord>) -> Vec<&'a str> {
        it.map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn indexes_follow_creates_and_deletes() {
        let mut x = EntryIndex::default();
        x.apply(entry("b", "spiffe://td/s", 1));
        x.apply(entry("a", "spiffe://td/s", 2));
        x.apply(entry("t", "spiffe://td/ns/{k8s:ns}", 3));
        x.apply(entry("c", "spiffe://td/other", 4));
        assert_eq!(x.len(), 4);
        assert_eq!(ids(x.live()), ["a", "b", "c", "t"]);
        // Sorted by id whatever the order of creation, so replicas pick alike.
        assert_eq!(ids(x.with_subject("spiffe://td/s")), ["a", "b"]);
        assert_eq!(ids(x.changed_since(0)), ["b", "a", "t", "c"]);
        assert_eq!(ids(x.changed_since(2)), ["t", "c"]);
        assert_eq!(ids(x.changed_since(4)), Vec::<&str>::new());
        assert_eq!(ids(x.templates()), ["t"]);
        assert_eq!(
            ids(x.with_subject("spiffe://td/ns/{k8s:ns}")),
            Vec::<&str>::new()
        );

        let before = x.clone();
        x.apply(gone("a", "spiffe://td/s", 5));
        x.apply(gone("t", "spiffe://td/ns/{k8s:ns}", 6));
        x.apply(gone("c", "spiffe://td/other", 7));
        assert_eq!(ids(x.with_subject("spiffe://td/s")), ["b"]);
        assert_eq!(ids(x.with_subject("spiffe://td/other")), Vec::<&str>::new());
        assert_eq!(ids(x.changed_since(0)), ["b"]);
        assert_eq!(ids(x.templates()), Vec::<&str>::new());
        assert_eq!(
            x.tombstones().collect::<Vec<_>>(),
            [("a", 5), ("c", 7), ("t", 6)]
        );
        assert!(!x.by_subject.contains_key("spiffe://td/other"));
        // The clone taken before is a snapshot: untouched by later changes.
        assert_eq!(ids(before.live()), ["a", "b", "c", "t"]);
        assert_eq!(before.tombstones().count(), 0);
    }

    #[test]
    fn a_changed_entry_moves_between_indexes() {
        let mut x = EntryIndex::default();
        x.apply(entry("a", "spiffe://td/s", 1));
        x.apply(entry("a", "spiffe://td/ns/{k8s:ns}", 2));
        assert_eq!(ids(x.with_subject("spiffe://td/s")), Vec::<&str>::new());
        assert_eq!(ids(x.templates()), ["a"]);
        x.apply(entry("a", "spiffe://td/t", 3));
        assert_eq!(ids(x.templates()), Vec::<&str>::new());
        assert_eq!(ids(x.with_subject("spiffe://td/t")), ["a"]);
        assert_eq!(x.get("a").map(|e| e.revision), Some(3));
        assert_eq!(x.len(), 1);
        assert_eq!(ids(x.changed_since(0)), ["a"]);
        assert_eq!(x.by_revision.len(), 1);
    }

    #[test]
    fn a_clone_shares_every_entry() {
        let mut x = EntryIndex::default();
        for i in 0..100 {
            x.apply(entry(&format!("e{i}"), &format!("spiffe://td/{i}"), i));
        }
        let y = x.clone();
        assert!(x
            .live
            .values()
            .zip(y.live.values())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
    }
}
