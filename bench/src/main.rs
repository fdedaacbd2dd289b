//! `cargo run --release -p lanyard-bench [-- --quick]`: the benchmark report.
//!
//! Every ratio is measured in this one run against its physical limit, in
//! alternating rounds (the median of the per-round ratios):
//! - the token core against raw ed25519 signs and verifies (`token.rs`);
//! - the agent against an "empty" server answering `FetchJWTSVID` with a
//!   constant reply over the same kind of Unix socket, same tonic stack, no
//!   attestation: latency, server CPU per cached call (`load.rs`), and server CPU
//!   per short-lived client process (`churn.rs`);
//! - the issuer (`issuer.rs`) and an upstream agent's cold start from its
//!   persisted cache with the issuer down (`cold.rs`).
//!
//! Servers and short-lived clients are separate processes (this binary
//! re-executed). It prints one `ratio NAME VALUE` or `figure NAME VALUE UNIT`
//! line per figure, writes the plots to `bench/plots/`, and rewrites the
//! generated part of BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod churn;
mod cold;
mod empty;
mod issuer;
mod load;
mod plot;
mod probe;
mod report;
mod token;

use std::cell::RefCell;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use report::{Goal, Line, Report};

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
        Some("__once") => return churn::once(Path::new(&args[2])),
        Some("__agent") => return run_agent(Path::new(&args[2])),
        Some("__empty") => return empty::serve(Path::new(&args[2])),
        Some("__issuer") => return issuer::run(Path::new(&args[2])),
        _ => {}
    }
    let began = Instant::now();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = std::env::temp_dir().join(format!("lanyard-bench-{}", std::process::id()));
    let uid = lanyard_agent::testing::my_uid();
    let mut rep = Report::new(quick);
    let show = |l: &Line| println!("{l}");
    let section = |name: &str| eprintln!("[{:5.1} s] {name}", began.elapsed().as_secs_f64());

    section("token ratios");
    // 1. The token core against raw ed25519.
    let (rounds, batch) = if quick { (21, 100) } else { (41, 200) };
    for (name, value) in token::ratios(rounds, batch) {
        let goal = match name {
            "mint_vs_ed25519_sign" => Goal::AtMost(1.5),
            "chain_verify_vs_3_ed25519_verify" => Goal::AtMost(1.2),
            _ => Goal::None,
        };
        rep.push(Line::ratio(name, value, goal), show);
    }

    section("latency and CPU per call");
    // 2. The agent (one identity) and the empty server, side by side.
    let one = dir.join("one");
    // The load generator is one process with up to 64 connections, and a round's
    // connections may still be closing when the next round opens its own: above
    // the agent's default per-process cap (64).
    let limits = "[connections]\nmax_per_process = 256\n";
    lanyard_agent::testing::standalone(&one, &format!("{}{limits}", entry(0, uid))).unwrap();
    let mut agent = spawn_self(&["__agent", one.to_str().unwrap()]);
    let empty_sock = dir.join("empty.sock");
    let mut empty = spawn_self(&["__empty", empty_sock.to_str().unwrap()]);
    let agent_sock = one.join("agent.sock");
    wait_socket(&agent_sock);
    wait_socket(&empty_sock);
    let lanyard_srv = load::Server {
        socket: &agent_sock,
        pid: agent.id(),
    };
    let empty_srv = load::Server {
        socket: &empty_sock,
        pid: empty.id(),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (rounds, secs) = if quick { (3, 0.75) } else { (6, 3.0) };
    let mut cpu_ratios = Vec::new();
    for conc in [1usize, 4, 16, 64] {
        let r = rt.block_on(load::compare(
            lanyard_srv,
            empty_srv,
            conc,
            rounds,
            Duration::from_secs_f64(secs),
        ));
        let p50 = r.lanyard.p50 / r.empty.p50;
        if conc == 1 {
            rep.push(
                Line::ratio(
                    "fetch_jwt_svid_p50_vs_empty_grpc_p50",
                    p50,
                    Goal::AtMost(2.0),
                ),
                show,
            );
        }
        rep.push(
            Line::ratio(
                &format!("fetch_jwt_svid_p50_vs_empty_grpc_p50_c{conc}"),
                p50,
                Goal::AtMost(2.0),
            ),
            show,
        );
        rep.push(
            Line::ratio(
                &format!("fetch_cpu_per_call_vs_floor_c{conc}"),
                token::median(r.cpu_ratios.clone()),
                Goal::None,
            ),
            show,
        );
        cpu_ratios.extend(r.cpu_ratios.iter().copied());
        rep.latency.push((conc, r));
    }
    rep.push(
        Line::ratio(
            "fetch_cpu_per_call_vs_floor",
            token::median(cpu_ratios),
            Goal::AtMost(2.0),
        ),
        show,
    );
    let c16 = &rep.latency[2].1;
    let (a, b) = (c16.lanyard_cpu_per_call, c16.empty_cpu_per_call);
    rep.push(
        Line::figure("fetch_cpu_per_call_us_c16", a * 1e6, "µs", Goal::None),
        show,
    );
    rep.push(
        Line::figure("empty_cpu_per_call_us_c16", b * 1e6, "µs", Goal::None),
        show,
    );

    section("short-lived processes");
    // 3. Short-lived processes, each connecting and fetching once, at a fixed rate.
    let (rounds, secs) = if quick { (3, 1.5) } else { (7, 4.0) };
    let target = 1000.0;
    let runs: RefCell<Vec<(bool, churn::Churn)>> = RefCell::new(Vec::new());
    let side = |s: load::Server, is_lanyard: bool| {
        let c = churn::round(s.socket, s.pid, target, Duration::from_secs_f64(secs), 64);
        runs.borrow_mut().push((is_lanyard, c));
        c.cpu_per_proc
    };
    // Warm up both (the agent hashes this binary once for `unix:sha256`).
    side(lanyard_srv, true);
    side(empty_srv, false);
    runs.borrow_mut().clear();
    let attest = token::median_ratio(
        rounds,
        || side(lanyard_srv, true),
        || side(empty_srv, false),
    );
    let runs = runs.into_inner();
    let (procs, errors) = runs
        .iter()
        .fold((0, 0), |(p, e), (_, c)| (p + c.procs, e + c.errors));
    let mean = |l: bool, f: fn(&churn::Churn) -> f64| {
        let v: Vec<f64> = runs.iter().filter(|r| r.0 == l).map(|r| f(&r.1)).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    rep.push(
        Line::ratio("attest_cpu_per_process_vs_floor", attest, Goal::AtMost(1.5)),
        show,
    );
    rep.push(
        Line::figure(
            "short_lived_procs_per_s",
            (mean(true, |c| c.rate) + mean(false, |c| c.rate)) / 2.0,
            "1/s",
            Goal::AtLeast(target),
        ),
        show,
    );
    rep.push(
        Line::figure(
            "short_lived_errors",
            errors as f64,
            "processes",
            Goal::AtMost(0.0),
        ),
        show,
    );
    rep.push(
        Line::figure("short_lived_procs", procs as f64, "processes", Goal::None),
        show,
    );
    rep.push(
        Line::figure(
            "attest_cpu_per_process_us",
            mean(true, |c| c.cpu_per_proc) * 1e6,
            "µs",
            Goal::None,
        ),
        show,
    );
    rep.push(
        Line::figure(
            "empty_cpu_per_process_us",
            mean(false, |c| c.cpu_per_proc) * 1e6,
            "µs",
            Goal::None,
        ),
        show,
    );
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = empty.kill();
    let _ = empty.wait();

    section("RSS");
    // 4. RSS against cached identities (each a JWT-SVID, an X.509-SVID and a seed + JWT).
    for n in [0usize, 250, 500, 1000] {
        let d = dir.join(format!("rss{n}"));
        let entries: String = (0..n).map(|i| entry(i, uid)).collect();
        lanyard_agent::testing::standalone(&d, &entries).unwrap();
        let mut agent = spawn_self(&["__agent", d.to_str().unwrap()]);
        wait_socket(&d.join("agent.sock"));
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_mib(agent.id());
        if n > 0 {
            rt.block_on(load::fill(&d.join("agent.sock"), n));
        }
        let full = rss_mib(agent.id());
        let _ = agent.kill();
        let _ = agent.wait();
        rep.rss.push((n, idle, full));
        if n == 0 {
            rep.push(
                Line::figure("agent_rss_idle", idle, "MiB", Goal::None),
                show,
            );
        }
        if n == 1000 {
            rep.push(
                Line::figure("agent_rss_1000_identities", full, "MiB", Goal::AtMost(32.0)),
                show,
            );
        }
    }

    section("issuer");
    // 5. The upstream issuer.
    let iss_dir = dir.join("issuer");
    let addr = issuer::setup(&iss_dir);
    let mut iss = spawn_self(&["__issuer", iss_dir.to_str().unwrap()]);
    wait_socket(&iss_dir.join("admin.sock"));
    let f = rt.block_on(issuer::measure(&iss_dir, &addr, iss.id(), quick));
    let _ = iss.kill();
    let _ = iss.wait();
    for l in [
        Line::figure("issuer_sign_per_s", f.sign_per_s, "1/s", Goal::None),
        Line::figure(
            "issuer_local_mint_per_s",
            f.local_mint_per_s,
            "1/s",
            Goal::None,
        ),
        Line::ratio(
            "issuer_sign_vs_local_mint",
            f.sign_per_s / f.local_mint_per_s,
            Goal::None,
        ),
        Line::figure("entry_sync_10000_ms", f.sync_10000_ms, "ms", Goal::None),
        Line::figure(
            "entry_sync_10000_bytes",
            f.sync_bytes as f64 / 1048576.0,
            "MiB",
            Goal::None,
        ),
        Line::figure("issuer_rss_idle", f.rss_idle, "MiB", Goal::None),
        Line::figure(
            &format!("issuer_rss_{}_agents", f.agents),
            f.rss_agents,
            "MiB",
            Goal::None,
        ),
    ] {
        rep.push(l, show);
    }

    section("cold start");
    // 6. Cold start of an upstream agent from its persisted cache, issuer down.
    let starts = if quick { 5 } else { 11 };
    let cold = rt.block_on(cold::measure(&dir.join("cold"), uid, starts));
    for l in [
        Line::figure(
            "cold_start_to_first_credential_ms",
            cold.first_credential_ms,
            "ms",
            Goal::AtMost(50.0),
        ),
        Line::figure("cold_start_to_socket_ms", cold.socket_ms, "ms", Goal::None),
        Line::figure(
            "cold_start_to_first_credential_no_hash_ms",
            cold.first_credential_no_hash_ms,
            "ms",
            Goal::None,
        ),
    ] {
        rep.push(l, show);
    }

    rep.finish(began.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
    issuer::cleanup();
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
