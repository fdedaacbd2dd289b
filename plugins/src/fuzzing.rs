//! Entry points shared by the cargo-fuzz targets (`fuzz/` at the repository
//! root) and the corpus replay test, so a crash the fuzzer finds replays as an
//! ordinary `cargo test`. Each panics only on a parser panic or a broken
//! invariant, which is what the fuzzer looks for.

use crate::{cgroup, template, Selector, Wanted};

/// Selector and entry-template parsing on arbitrary text. Line 1 is a template,
/// line 2 a trust domain, line 3 a subject, the rest selectors.
pub fn selector_template_bytes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let tpl = lines.next().unwrap_or_default();
    let td = lines.next().unwrap_or_default();
    let subject = lines.next().unwrap_or_default();
    let selectors: Vec<Selector> = lines.filter_map(|l| Selector::parse(l).ok()).collect();
    for s in &selectors {
        // A parsed selector round-trips and has a type.
        assert_eq!(Selector::parse(s.as_str()).as_ref(), Ok(s));
        assert!(!s.kind().is_empty());
    }
    let _ = Selector::parse(tpl);
    let _ = template::is_template(tpl);
    let _ = template::validate(tpl, td);
    let _ = template::matches(tpl, td, subject);
    // What an entry uses is always wanted, so attestors never leave out a
    // selector that an entry's selectors or template could need.
    let mut wanted = Wanted::default();
    wanted.add_subject(tpl);
    selectors.iter().for_each(|s| wanted.add_selector(s));
    let names = template::placeholders(tpl);
    let keyed = selectors.iter().filter_map(|s| {
        let (ty, rest) = s.as_str().split_once(':')?;
        Some((ty, rest.split_once(':')?.0))
    });
    for (ty, key) in names.iter().filter_map(|n| n.split_once(':')).chain(keyed) {
        assert!(wanted.wants(ty, key), "{ty}:{key} used but not wanted");
    }
    if let Ok(Some(rendered)) = template::render(tpl, td, &selectors) {
        // The issuer must accept what the agent renders, or templated entries
        // could never be signed.
        assert!(
            template::matches(tpl, td, &rendered),
            "{tpl:?} rendered {rendered:?}, which it does not match"
        );
    }
}

/// `/proc/PID/cgroup` parsing on arbitrary text.
pub fn cgroup_bytes(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let is_id =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Ok(info) = cgroup::parse_cgroup(&text) {
        if let Some(id) = &info.container_id {
            assert!(is_id(id), "container id {id:?}");
            assert!(info.systemd_unit.is_none());
        } else {
            assert!(info.runtime.is_none());
        }
        if let Some(uid) = &info.pod_uid {
            assert_eq!(uid.len(), 36, "pod uid {uid:?}");
        }
        // An id always comes with where it was found, and a distrusted path
        // yields none.
        if info.container_id.is_some() || info.pod_uid.is_some() {
            assert!(!info.claims.is_empty());
            assert!(info.distrust.is_none());
        }
    }
}
