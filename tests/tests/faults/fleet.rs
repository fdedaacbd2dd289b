//! Helpers for the faults of an issuer with upstream agents.

use std::collections::BTreeSet;
use std::path::Path;

use lanyard_tests::{http_get, my_uid, rt, Fleet};

use super::x509_svids;

// ---- issuer + upstream agents --------------------------------------------

/// A top-level `key = "value"` of a TOML file the fleet helpers wrote.
pub(crate) fn toml_str(path: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} not in {}", path.display()));
    line.split('"').nth(1).unwrap().to_owned()
}

pub(crate) fn connected(health: &str) -> Option<()> {
    let (code, body) = http_get(health, "/readyz")?;
    (code == 200 && body.contains("upstream: connected")).then_some(())
}

/// The issuer's Node API request counter (`/metrics`).
pub(crate) fn node_requests(health: &str) -> Option<u64> {
    let (_, body) = http_get(health, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix("lanyard_issuer_node_requests_total "))?
        .trim()
        .parse()
        .ok()
}

/// An upstream agent `name` with a fresh join token for it (no binary hashing).
pub(crate) fn upstream_agent(f: &Fleet, name: &str, addr: &str) -> String {
    let token = f.admin_cmd(
        "issuer1",
        &["join-token", "create", "--name", name, "--ttl", "10m"],
    );
    f.agent_config_with(
        name,
        addr,
        &format!("join_token = \"{token}\"\n[plugins.unix]\nmax_hash_bytes = 1"),
    )
}

pub(crate) fn create_entry(f: &Fleet, subject: &str, node: &str) -> String {
    f.admin_cmd(
        "issuer1",
        &[
            "entry",
            "create",
            "--subject",
            subject,
            "--selector",
            &format!("unix:uid:{}", my_uid()),
            "--node-selector",
            &format!("join:name:{node}"),
            "--ttl",
            "1h",
        ],
    )
}

/// The X.509-SVID ids the agent at `socket` gives this process.
pub(crate) fn svid_ids(socket: &Path) -> Option<BTreeSet<String>> {
    rt().block_on(x509_svids(socket))
        .ok()
        .map(|v| v.into_iter().map(|(id, _)| id).collect())
}

/// The entries an upstream agent has persisted, read with its own loader from a copy.
pub(crate) fn persisted_entries(f: &Fleet, name: &str) -> usize {
    let copy = f.dir.join(&format!("{name}/data-check"));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(f.dir.join(&format!("{name}/data"))).unwrap() {
        let e = e.unwrap();
        if !e.file_name().to_string_lossy().contains(".tmp-") {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    for file in ["upstream.json", "agent.cred", "cache.json"] {
        if let Ok(b) = std::fs::read(copy.join(file)) {
            let v = serde_json::from_slice::<serde_json::Value>(&b)
                .unwrap_or_else(|e| panic!("{file} ({} bytes) is torn: {e}", b.len()));
            if file == "agent.cred" {
                assert!(
                    v["seed"].is_string() && v["jwt"].is_string(),
                    "agent.cred: {v}"
                );
            }
        }
    }
    let cfg =
        lanyard_agent::config::Config::load(&f.dir.join(&format!("agent-{name}.toml"))).unwrap();
    let lanyard_agent::config::Source::Upstream(u) = cfg.source else {
        panic!("upstream agent expected")
    };
    let up =
        lanyard_agent::upstream::UpstreamAuthority::load(u, "example.org", copy.clone()).unwrap();
    let n = up.entries().len();
    let _ = std::fs::remove_dir_all(&copy);
    n
}
