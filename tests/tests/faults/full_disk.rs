//! A full disk under the agent's `data_dir`.

use std::path::Path;
use std::process::Command;

use lanyard_tests::{rt, wait_for};

use super::{check_data_dir_except, credentials, jwt_svid, local_agent, org_key, readyz, unix_now};

/// A small tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs (the fault tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system refuses (ENOSPC); returns the bytes written.
fn fill_disk(path: &Path) -> u64 {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC: {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    n
}

fn cache_entries(data: &Path) -> usize {
    std::fs::read(data.join("cache.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["entries"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// The disk under data_dir fills up: the agent goes on serving (old and new
/// credentials, from memory), `/readyz` says not ready and why, the file on
/// disk stays the last complete one, and once there is room again the agent
/// writes everything and is ready again, without a new request to prompt it.
#[test]
fn full_disk_under_data_dir() {
    let (d, health) = local_agent("faults-enospc", "1h");
    let org = org_key(&d.dir.join("org/org.public"));
    let data = d.dir.join("data");
    let _tmpfs = Tmpfs::mount(&data, "512k");
    let agent = d.start();
    let rt = rt();
    wait_for(10, "/readyz 200", || {
        readyz(&health).filter(|(c, _)| *c == 200)
    });
    let before: Vec<(String, String)> = (0..20)
        .map(|n| {
            let aud = format!("before-{n}");
            let (_, tok, _) = rt.block_on(jwt_svid(&d.socket(), &aud)).unwrap();
            (aud, tok)
        })
        .collect();
    wait_for(10, "the first 20 JWT-SVIDs on disk", || {
        (cache_entries(&data) >= 20).then_some(())
    });

    let filled = fill_disk(&data.join("filler"));
    let on_disk = std::fs::read(data.join("cache.json")).unwrap();
    // New credentials are made and served from memory meanwhile.
    let during: Vec<(String, String)> = (0..100)
        .map(|n| {
            let aud = format!("during-{n}");
            let (_, tok, _) = rt
                .block_on(jwt_svid(&d.socket(), &aud))
                .unwrap_or_else(|e| panic!("not served with a full disk: {e}"));
            (aud, tok)
        })
        .collect();
    let creds = rt
        .block_on(credentials(&d.socket(), "during-cred", org, unix_now()))
        .unwrap();
    assert_eq!(creds.len(), 1);
    let (code, body) = wait_for(10, "/readyz to report the failing writes", || {
        readyz(&health).filter(|(c, b)| *c == 503 && b.contains("No space left"))
    });
    println!(
        "full disk ({filled} bytes of filler): /readyz {code}: {}",
        body.trim()
    );
    assert!(body.contains("cache.json"), "{body}");
    // Cached credentials are still the same ones.
    for (aud, tok) in &before {
        assert_eq!(&rt.block_on(jwt_svid(&d.socket(), aud)).unwrap().1, tok);
    }
    // Nothing truncated: the file is the last complete one, byte for byte, and
    // reads back whole; no temp file is left taking space.
    assert_eq!(
        std::fs::read(data.join("cache.json")).unwrap(),
        on_disk,
        "cache.json changed while the disk was full"
    );
    let (loaded, temps) = check_data_dir_except(&d, "with a full disk", &["filler"]);
    assert!(loaded >= 20, "{loaded}");
    assert_eq!(temps, 0, "temp files left behind by failed writes");

    // Room again: the agent catches up by itself and is ready again.
    std::fs::remove_file(data.join("filler")).unwrap();
    wait_for(15, "/readyz 200 after the disk has room", || {
        readyz(&health).filter(|(c, _)| *c == 200)
    });
    wait_for(10, "everything on disk", || {
        (cache_entries(&data) >= 121).then_some(())
    });
    // And a restart serves what was made while the disk was full.
    agent.kill9();
    let _agent = d.start();
    for (aud, tok) in during.iter().take(10) {
        assert_eq!(&rt.block_on(jwt_svid(&d.socket(), aud)).unwrap().1, tok);
    }
}
