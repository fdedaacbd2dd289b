//! Stage 3, matching: which entries a caller's selectors entitle it to. An
//! entry applies when every one of its selectors is among the caller's; a
//! template entry's subject is then filled from those selectors, and an entry
//! whose template cannot be filled does not apply.

use std::sync::Arc;

use lanyard_plugins::{Selector, Wanted};

use crate::config::Entry;

/// The entries and the selector keys they use, swapped together so that an
/// attestation never matches new entries with selectors chosen for old ones.
#[derive(Debug, Default)]
pub struct Entries {
    list: Arc<Vec<Entry>>,
    wanted: Wanted,
}

impl Entries {
    /// The entry set, with the selector keys its entries use.
    pub fn new(list: Vec<Entry>) -> Arc<Self> {
        let mut wanted = Wanted::default();
        for e in &list {
            e.selectors.iter().for_each(|s| wanted.add_selector(s));
            wanted.add_subject(&e.subject);
        }
        Arc::new(Self {
            list: Arc::new(list),
            wanted,
        })
    }
}

impl Entries {
    /// Every entry, as loaded or synced.
    pub fn list(&self) -> &Arc<Vec<Entry>> {
        &self.list
    }

    /// The selector keys some entry uses: an attestor derives only these.
    pub fn wanted(&self) -> &Wanted {
        &self.wanted
    }

    /// The entries that apply to a caller with `selectors` (sorted and
    /// de-duplicated), templates filled.
    pub fn matching(&self, selectors: &[Selector]) -> Vec<Entry> {
        self.list
            .iter()
            .filter(|e| {
                e.selectors
                    .iter()
                    .all(|s| selectors.binary_search(s).is_ok())
            })
            .filter_map(|e| render(e, selectors))
            .collect()
    }
}

/// The entry as it applies to this caller: a template's subject filled from the
/// caller's selectors, or `None` if it cannot be (the entry then does not apply).
fn render(e: &Entry, selectors: &[Selector]) -> Option<Entry> {
    if !lanyard_plugins::template::is_template(&e.subject) {
        return Some(e.clone());
    }
    // `{trust_domain}` was filled when the entry was loaded.
    let subject = lanyard_plugins::template::render(&e.subject, "", selectors).ok()??;
    Some(Entry {
        subject,
        ..e.clone()
    })
}
