//! One read of a `/proc` file per attestation, shared by the attestors that
//! need it.
//!
//! The `container`, `systemd`, `docker` and `k8s` attestors all start from
//! `/proc/PID/cgroup`, which the kernel formats anew on every read. Inside
//! [`shared`], the first read of a path is kept and the others get a copy, so
//! one attestation reads it once. Outside it (and on every other thread)
//! nothing is kept: a copy never outlives the attestation it was read for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

thread_local! {
    static KEPT: RefCell<Option<HashMap<PathBuf, String>>> = const { RefCell::new(None) };
}

/// Runs `f` with reads of the same file shared. `f` must not move to another
/// thread: attestors are synchronous, and the pipeline runs them all in one
/// call on one thread.
pub fn shared<R>(f: impl FnOnce() -> R) -> R {
    /// Forgets what was kept, even if `f` panics.
    struct Forget;
    impl Drop for Forget {
        fn drop(&mut self) {
            KEPT.with(|k| k.borrow_mut().take());
        }
    }
    // Nested: the outer call owns the map and forgets it.
    if KEPT.with(|k| k.borrow().is_some()) {
        return f();
    }
    KEPT.with(|k| *k.borrow_mut() = Some(HashMap::new()));
    let _forget = Forget;
    f()
}

/// Reads `path` as text, or the copy kept by this attestation.
pub(crate) fn read_to_string(path: &Path) -> std::io::Result<String> {
    if let Some(text) = KEPT.with(|k| k.borrow().as_ref().and_then(|m| m.get(path).cloned())) {
        return Ok(text);
    }
    let text = std::fs::read_to_string(path)?;
    KEPT.with(|k| {
        if let Some(m) = k.borrow_mut().as_mut() {
            m.insert(path.to_path_buf(), text.clone());
        }
    });
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_only_inside_one_attestation() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cgroup");
        std::fs::write(&f, "one").unwrap();
        shared(|| {
            assert_eq!(read_to_string(&f).unwrap(), "one");
            std::fs::write(&f, "two").unwrap();
            assert_eq!(read_to_string(&f).unwrap(), "one", "the same attestation");
        });
        assert_eq!(
            read_to_string(&f).unwrap(),
            "two",
            "a new attestation reads anew"
        );
        shared(|| assert_eq!(read_to_string(&f).unwrap(), "two"));
    }
}
