//! `cargo run --release -p lanyard-bench [-- --quick]`: the agent benchmarks.
//!
//! Both servers run as separate processes (this binary re-executed), and the load
//! generator alternates between them in rounds, so both see the same machine:
//! - lanyard: a real standalone agent, cached `FetchJWTSVID` (attestation, cache
//!   hit, recheck, and the `:authority` reader all included);
//! - baseline: an "empty" server answering `FetchJWTSVID` with a constant reply
//!   over the same kind of Unix socket, same tonic stack, no attestation.
//!
//! It prints `ratio …` and `figure …` lines, and rewrites the agent section of
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod empty;
mod issuer;
mod load;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn spawn_self(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_socket(p: &Path) {
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{} never came up", p.display());
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    kb / 1024.0
}

fn entry(i: usize, uid: u32) -> String {
    format!("[[entries]]\nsubject = \"spiffe://example.org/bench/{i}\"\nselectors = [\"unix:uid:{uid}\"]\n")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__agent") => return run_agent(Path::new(&args[2])),
        Some("__empty") => return empty::serve(Path::new(&args[2])),
        Some("__issuer") => return issuer::run(Path::new(&args[2])),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("lanyard-bench-{}", std::process::id()));
    let uid = lanyard_agent::testing::my_uid();

    // One identity for the latency runs.
    let one = dir.join("one");
    lanyard_agent::testing::standalone(&one, &entry(0, uid)).unwrap();
    let mut agent = spawn_self(&["__agent", one.to_str().unwrap()]);
    let empty_sock = dir.join("empty.sock");
    let mut empty = spawn_self(&["__empty", empty_sock.to_str().unwrap()]);
    wait_socket(&one.join("agent.sock"));
    wait_socket(&empty_sock);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rounds, secs) = if quick { (3, 1.0) } else { (6, 3.0) };
    let mut lines = Vec::new();
    let mut table = Vec::new();
    for conc in [1usize, 16, 64] {
        let r = rt.block_on(load::compare(
            &one.join("agent.sock"),
            &empty_sock,
            conc,
            rounds,
            Duration::from_secs_f64(secs),
        ));
        table.push((conc, r.clone()));
        if conc == 1 {
            lines.push(format!(
                "ratio fetch_jwt_svid_p50_vs_empty_grpc_p50 {:.2}",
                r.lanyard.p50 / r.empty.p50
            ));
        }
        lines.push(format!(
            "ratio fetch_jwt_svid_p50_vs_empty_grpc_p50_c{conc} {:.2}",
            r.lanyard.p50 / r.empty.p50
        ));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = empty.kill();
    let _ = empty.wait();

    // RSS with 1,000 identities cached (each with a JWT-SVID, an X.509-SVID and a seed + JWT).
    let many = dir.join("many");
    let entries: String = (0..1000).map(|i| entry(i, uid)).collect();
    lanyard_agent::testing::standalone(&many, &entries).unwrap();
    let mut agent = spawn_self(&["__agent", many.to_str().unwrap()]);
    wait_socket(&many.join("agent.sock"));
    let idle = rss_mib(agent.id());
    rt.block_on(load::fill(&many.join("agent.sock")));
    let full = rss_mib(agent.id());
    let _ = agent.kill();
    let _ = agent.wait();
    lines.push(format!("figure agent_rss_idle {idle:.1} MiB"));
    lines.push(format!("figure agent_rss_1000_identities {full:.1} MiB"));

    // The upstream issuer.
    let iss_dir = dir.join("issuer");
    let addr = issuer::setup(&iss_dir);
    let mut iss = spawn_self(&["__issuer", iss_dir.to_str().unwrap()]);
    wait_socket(&iss_dir.join("admin.sock"));
    let f = rt.block_on(issuer::measure(&iss_dir, &addr, iss.id(), quick));
    let _ = iss.kill();
    let _ = iss.wait();
    lines.push(format!("figure issuer_sign_per_s {:.0} 1/s", f.sign_per_s));
    lines.push(format!(
        "figure issuer_local_mint_per_s {:.0} 1/s",
        f.local_mint_per_s
    ));
    lines.push(format!(
        "ratio issuer_sign_vs_local_mint {:.2}",
        f.sign_per_s / f.local_mint_per_s
    ));
    lines.push(format!(
        "figure entry_sync_10000_ms {:.0} ms",
        f.sync_10000_ms
    ));
    lines.push(format!(
        "figure entry_sync_10000_bytes {:.1} MiB",
        f.sync_bytes as f64 / 1048576.0
    ));
    lines.push(format!("figure issuer_rss_idle {:.1} MiB", f.rss_idle));
    lines.push(format!(
        "figure issuer_rss_{}_agents {:.1} MiB",
        f.agents, f.rss_agents
    ));
    for l in &lines {
        println!("{l}");
    }
    write_report(&table, &lines, quick);
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_agent(dir: &Path) {
    let config = lanyard_agent::config::Config::load(&dir.join("agent.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bound = lanyard_agent::app::build(config).await.unwrap();
        bound.wait_termination().await.unwrap();
    });
}

fn write_report(table: &[(usize, load::Comparison)], lines: &[String], quick: bool) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        return;
    };
    let (begin, end) = ("<!-- agent-bench:begin -->", "<!-- agent-bench:end -->");
    let (Some(b), Some(e)) = (doc.find(begin), doc.find(end)) else {
        return;
    };
    let mut s = String::new();
    s.push_str(begin);
    s.push_str(&format!(
        "\n\nGenerated by `cargo run --release -p lanyard-bench{}`.\n\n",
        if quick { " -- --quick" } else { "" }
    ));
    s.push_str("| clients | lanyard p50 | lanyard p99 | lanyard calls/s | empty p50 | empty p99 | empty calls/s | p50 ratio (goal ≤ 2.0) |\n|---|---|---|---|---|---|---|---|\n");
    for (c, r) in table {
        s.push_str(&format!(
            "| {c} | {:.0} µs | {:.0} µs | {:.0} | {:.0} µs | {:.0} µs | {:.0} | **{:.2}** |\n",
            r.lanyard.p50 * 1e6,
            r.lanyard.p99 * 1e6,
            r.lanyard.rate,
            r.empty.p50 * 1e6,
            r.empty.p99 * 1e6,
            r.empty.rate,
            r.lanyard.p50 / r.empty.p50
        ));
    }
    s.push_str("\n```\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str("```\n\n");
    let doc = format!("{}{}{}", &doc[..b], s, &doc[e..]);
    let _ = std::fs::write(&path, doc);
}
