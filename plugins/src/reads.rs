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
    let text = read_proc(path)?;
    KEPT.with(|k| {
        if let Some(m) = k.borrow_mut().as_mut() {
            m.insert(path.to_path_buf(), text.clone());
        }
    });
    Ok(text)
}

/// Reads a `/proc` file (or any small text file) whole; a file longer than
/// [`PROC_READ_MAX`] is an error, never a truncated text. Unlike [`std::fs::read_to_string`] it does not
/// `stat` the file first to size its buffer: `/proc` reports size 0, so that
/// `stat` is a system call per read that tells nothing.
pub fn read_proc(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut text = String::with_capacity(2048);
    // `Take` reads through the generic path, which does not stat.
    file.take(PROC_READ_MAX + 1).read_to_string(&mut text)?;
    if text.len() as u64 > PROC_READ_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is longer than {PROC_READ_MAX} bytes", path.display()),
        ));
    }
    Ok(text)
}

/// The most [`read_proc`] reads: far above any `/proc/PID/status` or
/// `/proc/PID/cgroup` (a cgroup path is at most a few KiB).
pub const PROC_READ_MAX: u64 = 1 << 20;

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

    #[test]
    fn an_overlong_file_is_an_error_not_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big");
        std::fs::write(&f, vec![b'a'; PROC_READ_MAX as usize]).unwrap();
        assert_eq!(read_proc(&f).unwrap().len() as u64, PROC_READ_MAX);
        std::fs::write(&f, vec![b'a'; PROC_READ_MAX as usize + 1]).unwrap();
        assert!(read_proc(&f).is_err());
        let status = read_proc(Path::new("/proc/self/status")).unwrap();
        assert!(status.contains("\nGroups:"), "{status}");
    }
}
