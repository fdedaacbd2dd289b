//! Fault injection with real processes (issue 6, part 2): the issuer killed
//! during sync and signing, the agent killed while it writes its cache, a full
//! disk under `data_dir`, PostgreSQL restarted under a running issuer, the clock
//! jumping past credential expiry (libfaketime), and the network between agents
//! and issuer cut and restored (network namespaces).
//!
//! Sizes that make a run long are knobs (`LANYARD_FAULTS_*`, see README,
//! "Fault injection"); the defaults keep the suite to a few minutes in debug.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, X509svidRequest};
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{http_get, lanyard_bin, my_uid, spawn_command, wait_for, Deployment};
use lanyard_token::{PublicKey, Verifier};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `LANYARD_FAULTS_<name>`, or `default`.
fn knob(name: &str, default: u64) -> u64 {
    std::env::var(format!("LANYARD_FAULTS_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A random number below `n`.
fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    lanyard_token::keys::random_bytes(&mut b).unwrap();
    u64::from_le_bytes(b) % n.max(1)
}

fn org_key(path: &Path) -> PublicKey {
    PublicKey::from_file_text(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The claims of a JWT (not verified).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&lanyard_token::jws::b64url_decode(payload).unwrap()).unwrap()
}

/// A JWT-SVID for `aud` over the raw Workload API: `(subject, token, exp)`.
async fn jwt_svid(socket: &Path, aud: &str) -> Result<(String, String, u64), String> {
    let ch = connect(socket).await.map_err(|e| e.to_string())?;
    jwt_svid_on(&ch, aud).await
}

async fn jwt_svid_on(
    ch: &tonic::transport::Channel,
    aud: &str,
) -> Result<(String, String, u64), String> {
    let r = SpiffeWorkloadApiClient::new(ch.clone())
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![aud.to_owned()],
            spiffe_id: String::new(),
        }))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let s = r.svids.first().ok_or("no JWT-SVID")?;
    let exp = claims(&s.svid)["exp"]
        .as_u64()
        .ok_or("JWT-SVID without exp")?;
    Ok((s.spiffe_id.clone(), s.svid.clone(), exp))
}

/// The seed + JWT credentials for `aud`; each is checked to verify with the org
/// key at `now` and to belong to its seed, so a half-made credential fails here.
async fn credentials(
    socket: &Path,
    aud: &str,
    org: PublicKey,
    now: u64,
) -> Result<Vec<(String, u64)>, String> {
    let ch = connect(socket).await.map_err(|e| e.to_string())?;
    let mut s = CredentialsClient::new(ch)
        .fetch_credentials(with_header(FetchCredentialsRequest {
            audiences: vec![aud.to_owned()],
        }))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let msg = s
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .ok_or("stream ended")?;
    let mut out = Vec::new();
    for c in msg.credentials {
        let v = Verifier::new(org)
            .verify(&c.jwt, now)
            .unwrap_or_else(|e| panic!("served credential for {} does not verify: {e}", c.subject));
        let seed = lanyard_token::KeyPair::from_seed_text(&c.seed).unwrap();
        assert_eq!(v.holder(), Some(seed.public()), "seed and JWT disagree");
        assert_eq!(v.claims().sub.as_deref(), Some(c.subject.as_str()));
        out.push((c.subject, u64::try_from(c.expires_at).unwrap()));
    }
    Ok(out)
}

/// The first X.509-SVID message: `(spiffe id, notAfter as unix seconds)` per SVID,
/// each checked with openssl against the bundle it came with.
async fn x509_svids(socket: &Path) -> Result<Vec<(String, u64)>, String> {
    let ch = connect(socket).await.map_err(|e| e.to_string())?;
    let mut s = SpiffeWorkloadApiClient::new(ch)
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    let msg = s
        .message()
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .ok_or("stream ended")?;
    Ok(msg
        .svids
        .iter()
        .map(|x| {
            assert!(!x.x509_svid.is_empty() && !x.x509_svid_key.is_empty());
            assert!(!x.bundle.is_empty(), "SVID without a bundle");
            (x.spiffe_id.clone(), x509_not_after(&x.x509_svid))
        })
        .collect())
}

/// notAfter of the first certificate in a DER chain, via openssl.
fn x509_not_after(der_chain: &[u8]) -> u64 {
    let dir = std::env::temp_dir().join(format!("lanyard-faults-x509-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The leaf is the first DER SEQUENCE; its length is in the header.
    let len = match der_chain[1] {
        0x82 => 4 + ((usize::from(der_chain[2]) << 8) | usize::from(der_chain[3])),
        0x81 => 3 + usize::from(der_chain[2]),
        n => 2 + usize::from(n),
    };
    let leaf = dir.join("leaf.der");
    std::fs::write(&leaf, &der_chain[..len]).unwrap();
    let out = Command::new("openssl")
        .args([
            "x509", "-inform", "DER", "-noout", "-enddate", "-dateopt", "iso_8601", "-in",
        ])
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // notAfter=2026-11-23 19:40:00Z
    let text = String::from_utf8_lossy(&out.stdout);
    let when = text.trim().trim_start_matches("notAfter=");
    let out = Command::new("date")
        .args(["-u", "-d", when, "+%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A standalone agent with one entry for this uid (the unix attestor does not
/// hash the big debug test binary) and its health endpoint on.
fn local_agent(name: &str, ttl: &str) -> (Deployment, String) {
    let uid = my_uid();
    let d = Deployment::new(
        name,
        &format!(
            "[[entries]]\nsubject = \"spiffe://example.org/faults\"\nselectors = [\"unix:uid:{uid}\"]\nttl = \"{ttl}\"\n\
             [plugins.unix]\nmax_hash_bytes = 1\n"
        ),
    );
    let health = format!("127.0.0.1:{}", lanyard_tests::free_port());
    let cfg = d.dir.join("agent.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "health_addr = \"off\"",
        &format!("health_addr = \"{health}\""),
    );
    std::fs::write(cfg, text).unwrap();
    (d, health)
}

/// A log without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for c in it.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Temp files of interrupted atomic writes in `dir` (`.NAME.tmp-PID-RND`), as (name, pid).
fn temp_files(dir: &Path) -> Vec<(String, u32)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let name = e.ok()?.file_name().to_string_lossy().into_owned();
        let rest = name.split(".tmp-").nth(1)?;
        let pid = rest.split('-').next()?.parse().ok()?;
        Some((name, pid))
    })
    .collect()
}

/// Checks the agent's `data_dir` as the agent itself would read it at start,
/// on a copy (the loaders tidy up, and the next start must do that itself):
/// only known files and temp files; `cache.json`, if present, is one complete
/// JSON document whose every unexpired entry the agent's own loader takes.
/// Returns (entries the loader took, temp files seen).
fn check_data_dir(d: &Deployment, what: &str) -> (usize, usize) {
    check_data_dir_except(d, what, &[])
}

/// [`check_data_dir`], with other files (`ignore`) allowed in data_dir.
fn check_data_dir_except(d: &Deployment, what: &str, ignore: &[&str]) -> (usize, usize) {
    let data = d.dir.join("data");
    let copy = d.dir.join("data-check");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    let mut temps = 0;
    for e in std::fs::read_dir(&data).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".tmp-") {
            temps += 1;
            continue;
        }
        if ignore.contains(&name.as_str()) {
            continue;
        }
        assert!(
            ["cache.json", "upstream.json", "agent.cred", "deny.jwt"].contains(&name.as_str()),
            "{what}: unexpected file {name} in data_dir"
        );
        std::fs::copy(e.path(), copy.join(&name)).unwrap();
    }
    let mut loaded = 0;
    if let Ok(bytes) = std::fs::read(copy.join("cache.json")) {
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{what}: cache.json ({} bytes) is not one JSON document: {e}",
                bytes.len()
            )
        });
        assert_eq!(v["version"], 1, "{what}");
        let now = unix_now();
        let live = v["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: cache.json has no entries list"))
            .iter()
            .filter(|e| e[1]["expires_at"].as_u64().unwrap() > now + 1)
            .count();
        let cfg = lanyard_agent::config::Config::load(&d.dir.join("agent.toml")).unwrap();
        let lanyard_agent::config::Source::Local(files) = &cfg.source else {
            panic!("local agent expected")
        };
        let auth =
            lanyard_agent::authority::LocalAuthority::load(files, "example.org", now).unwrap();
        let cache = lanyard_agent::cache::Cache::new(Arc::new(auth), copy.clone());
        loaded = cache.load(now);
        assert!(
            loaded >= live,
            "{what}: the agent's loader took {loaded} of {live} live cache entries"
        );
    }
    let _ = std::fs::remove_dir_all(&copy);
    (loaded, temps)
}

/// The agent is `kill -9`ed at a random point while a client keeps it minting
/// (every new audience is a new key, so the cache is rewritten every ~200 ms),
/// 200 times. After every kill the data_dir reads back whole with the agent's
/// own loader; the next start removes the temp files interrupted writes left,
/// and serves (from the restored cache, or minting afresh).
#[test]
fn agent_killed_while_writing_its_cache() {
    let kills = knob("AGENT_KILLS", 200);
    // Short-lived credentials: unused keys leave the cache once they expire, so
    // the file stays a few hundred KiB however many kills.
    let (d, _) = local_agent("faults-kill", "30s");
    let org = org_key(&d.dir.join("org/org.public"));
    let started = Instant::now();
    let (mut mid_write, mut restored_runs, mut max_loaded) = (0, 0, 0);
    let mut last_aud: Option<String> = None;
    for i in 0..kills {
        let t0 = Instant::now();
        let agent = d.start();
        if std::env::var_os("LANYARD_FAULTS_TRACE").is_some() {
            eprintln!("run {i}: start {:?}", t0.elapsed());
        }
        let pid = agent.pid();
        // The start removed what earlier kills left half-written.
        let stale: Vec<_> = temp_files(&d.dir.join("data"))
            .into_iter()
            .filter(|(_, p)| *p != pid)
            .collect();
        assert!(
            stale.is_empty(),
            "run {i}: stale temp files after start: {stale:?}"
        );
        let log = strip_ansi(&agent.log());
        if log.contains("restored=") && !log.contains("restored=0\n") {
            restored_runs += 1;
        }
        // It serves what it served before the kill (restored or minted again).
        if let Some(aud) = &last_aud {
            let (sub, _, exp) = rt()
                .block_on(jwt_svid(&d.socket(), aud))
                .unwrap_or_else(|e| panic!("run {i}: no JWT-SVID after restart: {e}\n{log}"));
            assert_eq!(sub, "spiffe://example.org/faults");
            assert!(exp > unix_now(), "run {i}: expired JWT-SVID served");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (stop, sock) = (stop.clone(), d.socket());
            std::thread::spawn(move || {
                rt().block_on(async {
                    let Ok(ch) = connect(&sock).await else {
                        return None;
                    };
                    let mut last = None;
                    for n in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let aud = format!("k{i}-{n}");
                        // Mostly JWT-SVIDs (cheap to make, so the file grows
                        // and a write takes a while), now and then a seed +
                        // JWT credential (the loader verifies those).
                        let ok = if n == 3 && i % 8 == 0 {
                            credentials(&sock, &aud, org, unix_now()).await.is_ok()
                        } else {
                            let ok = jwt_svid_on(&ch, &aud).await.is_ok();
                            if ok {
                                last = Some(aud);
                            }
                            ok
                        };
                        if !ok {
                            break;
                        }
                    }
                    last
                })
            })
        };
        // The kill lands anywhere in the persist loop's cycle (debounce + write).
        std::thread::sleep(Duration::from_millis(30 + random_below(300)));
        agent.kill9();
        stop.store(true, Ordering::Relaxed);
        if let Some(a) = load.join().unwrap() {
            last_aud = Some(a);
        }
        let t0 = Instant::now();
        let (loaded, temps) = check_data_dir(&d, &format!("after kill {i}"));
        if std::env::var_os("LANYARD_FAULTS_TRACE").is_some() {
            eprintln!(
                "run {i}: check {:?} total {:?} loaded {loaded} temps {temps}",
                t0.elapsed(),
                started.elapsed()
            );
        }
        max_loaded = max_loaded.max(loaded);
        if temps > 0 {
            mid_write += 1;
        }
    }
    // One more start after the last kill: clean and serving.
    let agent = d.start();
    let pid = agent.pid();
    assert!(temp_files(&d.dir.join("data"))
        .iter()
        .all(|(_, p)| *p == pid));
    if let Some(aud) = &last_aud {
        rt().block_on(jwt_svid(&d.socket(), aud)).unwrap();
    }
    drop(agent);
    println!(
        "figure faults_agent_kills {kills}\nfigure faults_agent_kills_mid_write {mid_write}\n\
         figure faults_agent_restarts_with_restored_cache {restored_runs}\n\
         figure faults_agent_cache_entries_max {max_loaded}\nfigure faults_agent_kill_loop_s {:.1}",
        started.elapsed().as_secs_f64()
    );
    // The kills must really have hit writes, and the cache must really have
    // been restored, or this test proves nothing.
    assert!(
        mid_write * 20 >= kills,
        "only {mid_write} of {kills} kills landed during a write"
    );
    assert!(
        restored_runs * 2 >= kills,
        "the cache was restored in only {restored_runs} of {kills} starts"
    );
}

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

fn readyz(health: &str) -> Option<(u16, String)> {
    http_get(health, "/readyz")
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

/// libfaketime, preloaded into a process, moves its wall clock by what
/// `FAKETIME_TIMESTAMP_FILE` says, re-read at every call (the monotonic clock,
/// which tokio's timers use, is left alone).
fn faketime_env(cmd: &mut Command, file: &Path) {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| PathBuf::from(format!("/usr/lib/{a}/faketime/libfaketime.so.1")))
        .find(|p| p.exists())
        .expect("libfaketime is missing: apt-get install faketime (scripts/test-all.sh does)");
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME_TIMESTAMP_FILE", file)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// The wall clock jumps 20 minutes forward under a running agent whose
/// credentials live 10 minutes: every later answer is a fresh credential valid
/// at the new time (never the expired one), and an open X.509 stream gets a
/// renewed SVID pushed by itself.
#[test]
fn clock_jumps_past_credential_expiry() {
    let (d, health) = local_agent("faults-clock", "10m");
    let org = org_key(&d.dir.join("org/org.public"));
    let offset = d.dir.join("faketime");
    // First, libfaketime really moves the Rust binary's clock: three days on,
    // the one-day chain issuer credential is expired.
    let verify_chain = || {
        let mut c = Command::new(lanyard_bin());
        c.args(["token", "verify", "--org-public"])
            .arg(d.dir.join("org/org.public"))
            .arg(d.dir.join("chain/chain.jwt"));
        faketime_env(&mut c, &offset);
        c.output().unwrap()
    };
    std::fs::write(&offset, "+3d\n").unwrap();
    let out = verify_chain();
    assert_eq!(
        out.status.code(),
        Some(1),
        "libfaketime does not move the clock of the lanyard binary: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&offset, "+0\n").unwrap();
    assert!(verify_chain().status.success());

    let sock = d.socket();
    let mut cmd = Command::new(lanyard_bin());
    cmd.args(["agent", "--config"])
        .arg(d.dir.join("agent.toml"));
    faketime_env(&mut cmd, &offset);
    let _agent = spawn_command(cmd, d.dir.join("agent.log"), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let rt = rt();
    let (_, tok1, exp1) = rt.block_on(jwt_svid(&sock, "clock")).unwrap();
    assert!(exp1 <= unix_now() + 600 + 5, "{exp1}");
    let creds1 = rt
        .block_on(credentials(&sock, "clock", org, unix_now()))
        .unwrap();
    let x1 = rt.block_on(x509_svids(&sock)).unwrap();
    assert_eq!(x1.len(), 1);

    rt.block_on(async {
        let mut stream = SpiffeWorkloadApiClient::new(connect(&sock).await.unwrap())
            .fetch_x509svid(with_header(X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(x509_not_after(&first.svids[0].x509_svid), x1[0].1);

        // Jump.
        let jump = 20 * 60;
        std::fs::write(&offset, format!("+{jump}\n")).unwrap();
        let fake_now = || unix_now() + jump;
        assert!(fake_now() > exp1 && fake_now() > x1[0].1 && fake_now() > creds1[0].1);

        // The open stream is pushed a renewed SVID, valid at the new time.
        let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("no renewed X.509-SVID pushed within 10 s of the jump")
            .unwrap()
            .unwrap();
        let not_after = x509_not_after(&pushed.svids[0].x509_svid);
        assert!(not_after > fake_now(), "pushed an expired X.509-SVID");

        // Every new request: fresh, valid at the new time.
        let (_, tok2, exp2) = jwt_svid(&sock, "clock").await.unwrap();
        assert_ne!(tok2, tok1, "the expired JWT-SVID was served again");
        assert!(exp2 > fake_now(), "expired JWT-SVID served: exp {exp2}");
        // `credentials` verifies at the given time: an expired one panics.
        let creds2 = credentials(&sock, "clock", org, fake_now()).await.unwrap();
        assert!(creds2[0].1 > fake_now());
        for (_, not_after) in x509_svids(&sock).await.unwrap() {
            assert!(not_after > fake_now(), "expired X.509-SVID served");
        }
    });
    let (code, body) = readyz(&health).unwrap();
    assert_eq!(code, 200, "{body}");
}
