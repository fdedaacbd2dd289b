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
