//! Files that must never be seen half-written: temp file in the same directory,
//! fsync, then rename (or link, when an existing file must not be replaced), then
//! fsync of the directory. Used for the credential cache, the CLI's keys and
//! tokens, and the sidecar's output.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Whether an existing file at the destination may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Replace it atomically.
    Yes,
    /// Fail with `AlreadyExists` (for seeds: losing one is unrecoverable).
    Never,
}

/// Writes `contents` to `path` with `mode`, atomically.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    replace: Replace,
) -> std::io::Result<()> {
    write_atomic_with(path, mode, replace, |w| w.write_all(contents))
}

/// Like [`write_atomic`], with the contents streamed by `fill` (no copy in memory).
pub fn write_atomic_with(
    path: &Path,
    mode: u32,
    replace: Replace,
    fill: impl FnOnce(&mut std::io::BufWriter<&fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut rnd = [0u8; 6];
    let _ = lanyard_token::keys::random_bytes(&mut rnd);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        lanyard_token::hex::encode(&rnd)
    ));
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        let mut w = std::io::BufWriter::new(&f);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        f.sync_all()?;
        drop(f);
        match replace {
            // link() fails if the target exists: no race between check and create.
            Replace::Never => fs::hard_link(&tmp, path),
            Replace::Yes => fs::rename(&tmp, path),
        }
    })();
    let _ = fs::remove_file(&tmp);
    result?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the temp files that interrupted writes of `path` left behind (a
/// crash or `kill -9` between creating the temp file and the rename), except
/// this process's own. Call it at start, before anything writes `path`: left
/// alone, every crash would leave a full-size copy in `data_dir`, and a disk
/// filled with them refuses the next write. Returns how many were removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let mine = format!("{prefix}{}-", std::process::id());
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        if f.starts_with(&prefix) && !f.starts_with(&mine) && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Why a directory the agent trusts is not safe to trust.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeDir {
    /// It could not be examined.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// Another user owns it, and could replace what is in it.
    #[error("{path} is owned by uid {owner}, not by the agent's uid {me}")]
    Owner {
        /// The directory.
        path: String,
        /// Its owner.
        owner: u32,
        /// The agent's effective uid.
        me: u32,
    },
    /// Group or others may write it, and could replace what is in it.
    #[error("{path} is writable by group or others (mode {mode:o})")]
    Writable {
        /// The directory.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// Checks that `dir` is owned by this process's effective uid and writable by
/// no one else. A directory others can write lets them swap the agent's socket
/// for their own (and collect every workload's requests) or plant a cache file.
pub fn check_private_dir(dir: &Path) -> Result<(), UnsafeDir> {
    use std::os::unix::fs::MetadataExt as _;
    let shown = || dir.display().to_string();
    // Not followed: a symlink's target can be swapped after this check.
    let meta = fs::symlink_metadata(dir).map_err(|e| UnsafeDir::Io(shown(), e))?;
    if !meta.is_dir() {
        return Err(UnsafeDir::Io(
            shown(),
            std::io::Error::other("not a directory (a symlink is not accepted)"),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(UnsafeDir::Owner {
            path: shown(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UnsafeDir::Writable {
            path: shown(),
            mode,
        });
    }
    Ok(())
}

/// Reads a seed file, warning when others may read it too: a seed is the whole
/// identity it stands for, so the warning names the file and the fix. It is a
/// warning and not a refusal because a mounted Kubernetes secret shows mode
/// 0644 inside a pod whose only reader is the agent.
pub fn read_seed_text(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let file = fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if let Some(warning) = seed_mode_warning(path, mode) {
        tracing::warn!("{warning}");
        // The CLI's one-shot commands log nothing; say it where a person sees it.
        if !tracing::dispatcher::has_been_set() {
            eprintln!("lanyard: warning: {warning}");
        }
    }
    // A seed is a line of text; a path that names something endless
    // (`/dev/zero`) or huge is a mistake, not a seed.
    const LIMIT: u64 = 64 * 1024;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, LIMIT + 1), &mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {LIMIT} bytes: not a seed file"),
        ));
    }
    Ok(text)
}

/// The warning for a seed file with `mode`, if others than its owner may read it.
pub fn seed_mode_warning(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is readable by others (mode {:04o}); a seed is a private key: chmod 600 it",
            path.display(),
            mode & 0o7777
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stale_temps_of_one_file_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("lanyard-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cache.json");
        write_atomic(&path, b"{}", 0o600, Replace::Yes).unwrap();
        fs::write(dir.join(".cache.json.tmp-1-abcdef"), b"{\"ha").unwrap();
        fs::write(dir.join(".cache.json.tmp-2-012345"), b"").unwrap();
        fs::write(dir.join(".upstream.json.tmp-1-abcdef"), b"x").unwrap();
        let own = dir.join(format!(".cache.json.tmp-{}-aaaaaa", std::process::id()));
        fs::write(&own, b"x").unwrap();
        assert_eq!(remove_stale_temps(&path), 2);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let own_name = own.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            left,
            [
                own_name.as_str(),
                ".upstream.json.tmp-1-abcdef",
                "cache.json"
            ]
        );
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seeds_others_may_read_are_named_in_a_warning() {
        let p = Path::new("/x/chain.seed");
        assert_eq!(seed_mode_warning(p, 0o100600), None);
        assert_eq!(seed_mode_warning(p, 0o100400), None);
        let w = seed_mode_warning(p, 0o100640).unwrap();
        assert!(w.contains("/x/chain.seed") && w.contains("0640"), "{w}");
        assert!(seed_mode_warning(p, 0o100604).is_some());
    }
}
