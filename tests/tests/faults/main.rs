//! Fault injection with real processes (issue 6, part 2): the issuer killed
//! during sync and signing, the agent killed while it writes its cache, a full
//! disk under `data_dir`, PostgreSQL restarted under a running issuer, the clock
//! jumping past credential expiry (libfaketime), and the network between agents
//! and issuer cut and restored (network namespaces).
//!
//! Sizes that make a run long are knobs (`LANYARD_FAULTS_*`, see README,
//! "Fault injection"); the defaults keep the suite to a few minutes in debug.
#![allow(clippy::unwrap_used, clippy::panic)]

mod cache_writes;
mod clock;
mod fleet;
mod full_disk;
mod issuer;
mod network;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, X509svidRequest};
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use lanyard_tests::{http_get, my_uid, Deployment};
use lanyard_token::{PublicKey, Verifier};

/// `LANYARD_FAULTS_<name>`, or `default`.
pub(crate) fn knob(name: &str, default: u64) -> u64 {
    std::env::var(format!("LANYARD_FAULTS_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A random number below `n`.
pub(crate) fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    lanyard_token::keys::random_bytes(&mut b).unwrap();
    u64::from_le_bytes(b) % n.max(1)
}

pub(crate) fn org_key(path: &Path) -> PublicKey {
    PublicKey::from_file_text(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The claims of a JWT (not verified).
pub(crate) fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&lanyard_token::jws::b64url_decode(payload).unwrap()).unwrap()
}

/// A JWT-SVID for `aud` over the raw Workload API: `(subject, token, exp)`.
pub(crate) async fn jwt_svid(socket: &Path, aud: &str) -> Result<(String, String, u64), String> {
    let ch = connect(socket).await.map_err(|e| e.to_string())?;
    jwt_svid_on(&ch, aud).await
}

pub(crate) async fn jwt_svid_on(
    ch: &tonic::transport::Channel,
    aud: &str,
) -> Result<(String, String, u64), String> {
    let r = SpiffeWorkloadApiClient::new(ch.clone())
        .fetch_jwtsvid(with_header(JwtsvidRequest {
            audience: vec![aud.to_owned()],
            spiffe_id: String::new(),
        }))
        .await
        .map_err(status_text)?
        .into_inner();
    let s = r.svids.first().ok_or("no JWT-SVID")?;
    let exp = claims(&s.svid)["exp"]
        .as_u64()
        .ok_or("JWT-SVID without exp")?;
    Ok((s.spiffe_id.clone(), s.svid.clone(), exp))
}

/// The seed + JWT credentials for `aud`; each is checked to verify with the org
/// key at `now` and to belong to its seed, so a half-made credential fails here.
pub(crate) async fn credentials(
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
        .map_err(status_text)?
        .into_inner();
    let msg = s
        .message()
        .await
        .map_err(status_text)?
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

/// A gRPC status as one line, for errors the tests print.
pub(crate) fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The first X.509-SVID message: `(spiffe id, notAfter as unix seconds)` per SVID,
/// each checked with openssl against the bundle it came with.
pub(crate) async fn x509_svids(socket: &Path) -> Result<Vec<(String, u64)>, String> {
    let ch = connect(socket).await.map_err(|e| e.to_string())?;
    let mut s = SpiffeWorkloadApiClient::new(ch)
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
        .map_err(status_text)?
        .into_inner();
    let msg = s
        .message()
        .await
        .map_err(status_text)?
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
pub(crate) fn x509_not_after(der_chain: &[u8]) -> u64 {
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
pub(crate) fn local_agent(name: &str, ttl: &str) -> (Deployment, String) {
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
pub(crate) fn strip_ansi(s: &str) -> String {
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
pub(crate) fn temp_files(dir: &Path) -> Vec<(String, u32)> {
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
pub(crate) fn check_data_dir(d: &Deployment, what: &str) -> (usize, usize) {
    check_data_dir_except(d, what, &[])
}

/// [`check_data_dir`], with other files (`ignore`) allowed in data_dir.
pub(crate) fn check_data_dir_except(d: &Deployment, what: &str, ignore: &[&str]) -> (usize, usize) {
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

pub(crate) fn readyz(health: &str) -> Option<(u16, String)> {
    http_get(health, "/readyz")
}
