//! The files `lanyard fetch` writes: every identity the caller has, named so
//! that the default one keeps the names a single-identity workload reads, and
//! an index (`identities.json`) that says which file holds what.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, Result};
use lanyard_agent::fsutil::{write_atomic, Replace};
use lanyard_agent::pem;
use lanyard_proto::spiffe::X509svidResponse;
use lanyard_proto::workload::Credential;

/// The index of what was written, rewritten last.
pub const INDEX: &str = "identities.json";

/// A JWT-SVID fetched for one SPIFFE ID and audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvid {
    /// Which of the X.509-SVIDs' SPIFFE IDs it is for (its position).
    pub identity: usize,
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The audience asked for.
    pub audience: String,
    /// The token.
    pub token: String,
}

/// One complete set of files, in memory, so that they are written together:
/// `(name, contents, mode)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Files(pub Vec<(String, Vec<u8>, u32)>);

/// `""` for the default (first) identity, `.N` for the others: a workload with
/// one identity reads the same names as before there could be several.
fn suffix(i: usize) -> String {
    if i == 0 {
        String::new()
    } else {
        format!(".{i}")
    }
}

/// An audience as a file name part: anything but `[A-Za-z0-9._-]` becomes `_`.
fn safe(aud: &str) -> String {
    aud.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every file for what the agent sent: each seed + JWT credential, each
/// X.509-SVID and each JWT-SVID, in the agent's order (its first is the default).
pub fn build(
    creds: &[Credential],
    x509: Option<&X509svidResponse>,
    jwts: &[JwtSvid],
) -> Result<Files> {
    let mut files = Vec::new();
    let (mut idx_creds, mut idx_x509, mut idx_jwt) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in creds.iter().enumerate() {
        let (seed, jwt) = (
            format!("credential{}.seed", suffix(i)),
            format!("credential{}.jwt", suffix(i)),
        );
        files.push((seed.clone(), c.seed.clone().into_bytes(), 0o600));
        files.push((jwt.clone(), c.jwt.clone().into_bytes(), 0o644));
        idx_creds.push(serde_json::json!({"subject": c.subject, "seed": seed, "jwt": jwt, "expires_at": c.expires_at}));
    }
    if let Some(c) = creds.first() {
        files.push((
            "org.public".into(),
            c.org_public.clone().into_bytes(),
            0o644,
        ));
    }
    let svids = x509.map(|x| x.svids.as_slice()).unwrap_or_default();
    for (i, svid) in svids.iter().enumerate() {
        let (cert, key) = (
            format!("svid{}.pem", suffix(i)),
            format!("svid{}.key", suffix(i)),
        );
        files.push((
            cert.clone(),
            pem::certs(&svid.x509_svid).into_bytes(),
            0o644,
        ));
        let key_pem = pem::encode("PRIVATE KEY", &svid.x509_svid_key);
        files.push((key.clone(), key_pem.into_bytes(), 0o600));
        idx_x509.push(serde_json::json!({"spiffe_id": svid.spiffe_id, "cert": cert, "key": key}));
    }
    if let Some(first) = svids.first() {
        files.push((
            "bundle.pem".into(),
            pem::certs(&first.bundle).into_bytes(),
            0o644,
        ));
    }
    for j in jwts {
        let name = format!("jwt_svid.{}{}.token", safe(&j.audience), suffix(j.identity));
        files.push((name.clone(), j.token.clone().into_bytes(), 0o600));
        idx_jwt.push(
            serde_json::json!({"spiffe_id": j.spiffe_id, "audience": j.audience, "file": name}),
        );
    }
    let index =
        serde_json::json!({"credentials": idx_creds, "x509_svids": idx_x509, "jwt_svids": idx_jwt});
    let index = serde_json::to_vec_pretty(&index).unwrap_or_default();
    files.push((INDEX.into(), index, 0o644));
    // Two audiences can map to one name (`a/b` and `a_b`, or `x.1` of the first
    // identity and `x` of the second): one token would overwrite the other and
    // the index would send a reader to the wrong one. Refuse instead.
    let mut seen = BTreeSet::new();
    for (name, _, _) in &files {
        if !seen.insert(name.as_str()) {
            anyhow::bail!(
                "two credentials would both be written to {name}: give audiences that differ in letters, digits, '.', '-' or '_'"
            );
        }
    }
    Ok(Files(files))
}

/// Whether `name` is one this module writes (and so may remove): never a path,
/// never a file the workload or the operator put beside them.
fn ours(name: &str) -> bool {
    let kinds = ["credential", "svid", "jwt_svid"];
    !name.contains('/')
        && kinds
            .iter()
            .any(|k| name.strip_prefix(k).is_some_and(|r| r.starts_with('.')))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The names the last run wrote, from its index (to remove what no identity
/// needs any more, even across restarts of the sidecar).
pub fn previous(dir: &Path) -> BTreeSet<String> {
    let Some(text) = read_index(&dir.join(INDEX)) else {
        return BTreeSet::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return BTreeSet::new();
    };
    let mut names = BTreeSet::new();
    for (list, keys) in [
        ("credentials", &["seed", "jwt"][..]),
        ("x509_svids", &["cert", "key"][..]),
        ("jwt_svids", &["file"][..]),
    ] {
        for item in v[list].as_array().map(Vec::as_slice).unwrap_or_default() {
            for k in keys {
                if let Some(n) = item[*k].as_str().filter(|n| ours(n)) {
                    names.insert(n.to_owned());
                }
            }
        }
    }
    names
}

/// The old index, if it is a regular file this process owns, of a sane size.
/// A workload that can write into the directory could put a FIFO (which would
/// block the sidecar), a symlink to `/dev/zero` or a huge file in its place:
/// none of those is read, and the directory is then not pruned.
fn read_index(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    const LIMIT: u64 = 1 << 20;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() || meta.len() > LIMIT {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(LIMIT).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// `O_NOFOLLOW | O_NONBLOCK`: never through a symlink, never waiting on a FIFO.
pub(super) fn libc_flags() -> i32 {
    (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK)
        .bits()
        .cast_signed()
}

/// Writes every file (each atomically), the index last, then removes the files
/// of identities the caller no longer has.
pub fn write(dir: &Path, files: &Files) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let before = previous(dir);
    for (name, bytes, mode) in &files.0 {
        write_atomic(&dir.join(name), bytes, *mode, Replace::Yes)
            .with_context(|| format!("cannot write {name}"))?;
    }
    let now: BTreeSet<&str> = files.0.iter().map(|(n, _, _)| n.as_str()).collect();
    for gone in before.iter().filter(|n| !now.contains(n.as_str())) {
        // Best effort: a file already gone is what we wanted.
        let _ = std::fs::remove_file(dir.join(gone));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(subject: &str) -> Credential {
        Credential {
            subject: subject.into(),
            seed: format!("seed-{subject}"),
            jwt: format!("jwt-{subject}"),
            org_public: "org".into(),
            expires_at: 1,
        }
    }

    #[test]
    fn every_identity_gets_files_and_the_first_keeps_the_plain_names() {
        let creds = [cred("spiffe://example.org/a"), cred("urn:lanyard:b")];
        let jwts = [JwtSvid {
            identity: 0,
            spiffe_id: "spiffe://example.org/a".into(),
            audience: "mq tt".into(),
            token: "t".into(),
        }];
        let f = build(&creds, None, &jwts).unwrap();
        let names: Vec<&str> = f.0.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "credential.seed",
                "credential.jwt",
                "credential.1.seed",
                "credential.1.jwt",
                "org.public",
                "jwt_svid.mq_tt.token",
                INDEX
            ]
        );
        let index: serde_json::Value = serde_json::from_slice(&f.0.last().unwrap().1).unwrap();
        assert_eq!(index["credentials"][1]["subject"], "urn:lanyard:b");
        assert_eq!(index["credentials"][1]["seed"], "credential.1.seed");
    }

    #[test]
    fn audiences_that_map_to_one_file_are_refused() {
        let jwt = |identity, audience: &str| JwtSvid {
            identity,
            spiffe_id: "spiffe://example.org/a".into(),
            audience: audience.into(),
            token: "t".into(),
        };
        let creds = [cred("a"), cred("b")];
        for clash in [[jwt(0, "a/b"), jwt(0, "a_b")], [jwt(0, "x.1"), jwt(1, "x")]] {
            let err = build(&creds, None, &clash).unwrap_err().to_string();
            assert!(err.contains("both be written"), "{err}");
        }
        assert!(build(&creds, None, &[jwt(0, "x"), jwt(1, "x")]).is_ok());
    }

    #[test]
    fn a_planted_index_is_not_read() {
        let dir = std::env::temp_dir().join(format!("lanyard-fetch-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO would block a plain read forever; a symlink could point anywhere.
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            dir.join(INDEX),
            rustix::fs::Mode::from_raw_mode(0o644),
        )
        .unwrap();
        assert!(previous(&dir).is_empty());
        std::fs::remove_file(dir.join(INDEX)).unwrap();
        std::fs::write(
            dir.join("elsewhere.json"),
            r#"{"credentials":[{"seed":"credential.seed"}]}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere.json"), dir.join(INDEX)).unwrap();
        assert!(previous(&dir).is_empty());
        std::fs::remove_file(dir.join(INDEX)).unwrap();
        std::fs::rename(dir.join("elsewhere.json"), dir.join(INDEX)).unwrap();
        assert_eq!(
            previous(&dir).into_iter().collect::<Vec<_>>(),
            ["credential.seed"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_our_own_names_are_ever_removed() {
        for ok in [
            "credential.1.seed",
            "svid.2.pem",
            "jwt_svid.x.3.token",
            "credential.jwt",
        ] {
            assert!(ours(ok), "{ok}");
        }
        for bad in [
            "../etc/passwd",
            "org.public",
            "bundle.pem",
            INDEX,
            "app.conf",
            "credential",
            "svid/../../x",
            "credentialx.seed",
        ] {
            assert!(!ours(bad), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("lanyard-fetch-files-{}", std::process::id()));
        let two = build(&[cred("a"), cred("b")], None, &[]).unwrap();
        write(&dir, &two).unwrap();
        std::fs::write(dir.join("app.conf"), "mine").unwrap();
        write(&dir, &build(&[cred("a")], None, &[]).unwrap()).unwrap();
        assert!(dir.join("credential.seed").exists());
        assert!(
            !dir.join("credential.1.seed").exists(),
            "a lost identity's files go"
        );
        assert!(dir.join("app.conf").exists(), "files not ours stay");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
