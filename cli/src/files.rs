//! Key and token files on disk: written atomically, seeds 0600 and never overwritten.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use lanyard_agent::fsutil::{write_atomic, Replace};
use lanyard_token::{KeyPair, PublicKey};

/// What a file holds, which decides its mode and whether it may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A seed: mode 0600, never replaced (losing an org seed is unrecoverable).
    Secret,
    /// A public key or token: mode 0644, replaced atomically.
    Public,
}

/// Writes `contents` to `path` atomically (see `lanyard_agent::fsutil`).
pub fn write(path: &Path, contents: &[u8], kind: Kind) -> Result<()> {
    let (mode, replace) = match kind {
        Kind::Secret => (0o600, Replace::Never),
        Kind::Public => (0o644, Replace::Yes),
    };
    write_atomic(path, contents, mode, replace).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "refusing to overwrite existing seed file {}; move it away first",
                path.display()
            )
        } else {
            anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
        }
    })
}

/// Reads a small text file (keys and tokens are far below the limit).
pub fn read_text(path: &Path) -> Result<String> {
    const LIMIT: u64 = 1 << 20;
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > LIMIT {
        bail!(
            "{} is {} bytes; key and token files are at most {LIMIT}",
            path.display(),
            meta.len()
        );
    }
    fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))
}

/// Reads a seed file.
pub fn read_seed(path: &Path) -> Result<KeyPair> {
    let text = lanyard_agent::fsutil::read_seed_text(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    KeyPair::from_seed_text(&text).with_context(|| format!("{} is not a seed file", path.display()))
}

/// Reads a public key file.
pub fn read_public(path: &Path) -> Result<PublicKey> {
    PublicKey::from_file_text(&read_text(path)?)
        .with_context(|| format!("{} is not a public key file", path.display()))
}

/// Writes a new key pair as `<dir>/<stem>.seed` and `<dir>/<stem>.public`.
pub fn write_key_pair(dir: &Path, stem: &str, key: &KeyPair) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let seed = dir.join(format!("{stem}.seed"));
    let public = dir.join(format!("{stem}.public"));
    write(&seed, key.seed_text().as_bytes(), Kind::Secret)?;
    write(&public, key.public().to_hex().as_bytes(), Kind::Public)?;
    Ok((seed, public))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn seeds_are_0600_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("lanyard-files-test-{}", std::process::id()));
        let key = KeyPair::generate().unwrap();
        let (seed, public) = write_key_pair(&dir, "org", &key).unwrap();
        assert_eq!(
            fs::metadata(&seed).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&seed).unwrap(), key.seed_text().as_str());
        assert_eq!(fs::read_to_string(&public).unwrap().len(), 64);
        let err = write_key_pair(&dir, "org", &KeyPair::generate().unwrap()).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read_to_string(&seed).unwrap(), key.seed_text().as_str());
        // No temp files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }
}
