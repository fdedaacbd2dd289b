//! The network between agents and issuer cut and restored.

use std::time::{Duration, Instant};

use lanyard_tests::{lanyard_bin, spawn_command, wait_for, Fleet};

use super::fleet::{connected, create_entry, node_requests, svid_ids, toml_str, upstream_agent};
use super::{knob, strip_ansi};

/// Ten agents in a network namespace, the issuer outside, a veth pair between:
/// the link is cut for 20 s and restored. Requests reaching the issuer are
/// counted per second (its Node API counter): on recovery the peak stays
/// within a small multiple of what one reconnect of the whole fleet takes
/// (backoff 1 s doubling to 60 s, full jitter), every agent is back, and an
/// entry created afterwards reaches every one of them.
#[test]
fn network_cut_and_restored_without_a_retry_storm() {
    let agents = knob("NET_AGENTS", 10) as usize;
    let cut_secs = knob("NET_CUT_SECS", 20);
    let ns = lanyard_tests::netns::NetNs::new(0);
    let f = Fleet::new("faults-net");
    let local = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    let port = local.rsplit(':').next().unwrap();
    let addr = format!("{}:{port}", ns.host_addr);
    let icfg = f.dir.join("issuer1.toml");
    let text = std::fs::read_to_string(&icfg)
        .unwrap()
        .replace(&local, &addr);
    std::fs::write(&icfg, text).unwrap();
    let ihealth = toml_str(&icfg, "health_addr");
    let _issuer = f.start_issuer("issuer1");

    let mut procs = Vec::new();
    let mut healths = Vec::new();
    for i in 0..agents {
        let name = format!("n{i}");
        let h = upstream_agent(&f, &name, &addr);
        let cfg = f.dir.join(&format!("agent-{name}.toml"));
        // Inside the namespace no other process binds anything, so a fixed
        // port per agent is free; the host's free ports, picked one at a
        // time, can repeat (two agents once got the same one).
        let inside = format!("{}:{}", ns.ns_addr, 19_000 + i);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(&h, &inside);
        std::fs::write(&cfg, text).unwrap();
        create_entry(&f, &format!("spiffe://example.org/net/{i}"), &name);
        let mut cmd = ns.command(&lanyard_bin());
        cmd.args(["agent", "--config"]).arg(&cfg);
        let sock = f.agent_socket(&name);
        procs.push(spawn_command(
            cmd,
            f.dir.join(&format!("agent-{name}.log")),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        ));
        healths.push(inside);
    }
    for h in &healths {
        wait_for(30, "agent connected", || connected(h));
    }
    for i in 0..agents {
        let sock = f.agent_socket(&format!("n{i}"));
        wait_for(10, "its identity", || {
            svid_ids(&sock).filter(|s| !s.is_empty())
        });
    }
    // What the fleet needs: requests per agent to attest, connect, sync and sign.
    let startup = node_requests(&ihealth).unwrap();
    let per_agent = startup as f64 / agents as f64;
    // Steady state: connected and idle.
    let s0 = node_requests(&ihealth).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let steady = (node_requests(&ihealth).unwrap() - s0) as f64 / 5.0;

    let interrupted = |i: usize| {
        strip_ansi(&procs[i].log())
            .matches("upstream sync interrupted")
            .count()
    };
    let before_cut: Vec<usize> = (0..agents).map(interrupted).collect();
    ns.cut();
    let cut_at = Instant::now();
    let c0 = node_requests(&ihealth).unwrap();
    // Every agent notices the dead link (no FIN, no RST arrives) during the cut.
    let mut noticed = vec![None; agents];
    while cut_at.elapsed() < Duration::from_secs(cut_secs) {
        for (i, n) in noticed.iter_mut().enumerate() {
            if n.is_none() && interrupted(i) > before_cut[i] {
                *n = Some(cut_at.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        noticed.iter().all(Option::is_some),
        "agents still believed the link alive after a {cut_secs} s cut: {noticed:?}"
    );
    let detect_s = noticed.iter().flatten().copied().fold(0.0, f64::max);
    let during = node_requests(&ihealth).unwrap() - c0;
    ns.restore();
    // Per-second samples until every agent is back, and 5 s more.
    let restored = Instant::now();
    let mut last = node_requests(&ihealth).unwrap();
    let r0 = last;
    let mut per_sec = Vec::new();
    let mut back_at = None;
    while back_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(5)) {
        assert!(
            restored.elapsed() < Duration::from_secs(120),
            "not every agent reconnected within 120 s; per-second requests {per_sec:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
        let now = node_requests(&ihealth).unwrap();
        per_sec.push(now - last);
        last = now;
        if back_at.is_none() && healths.iter().all(|h| connected(h).is_some()) {
            back_at = Some(Instant::now());
        }
    }
    let reconnect_s = back_at.unwrap().duration_since(restored).as_secs_f64();
    // Every agent really gets updates again.
    create_entry(&f, "spiffe://example.org/net/after", "n0");
    let sock = f.agent_socket("n0");
    wait_for(15, "an entry created after the cut at agent n0", || {
        svid_ids(&sock).filter(|s| s.contains("spiffe://example.org/net/after"))
    });
    let peak = per_sec.iter().copied().max().unwrap_or(0);
    let recovery_total = last - r0;
    println!(
        "figure faults_net_agents {agents}\nfigure faults_net_cut_s {cut_secs}\n\
         figure faults_net_requests_per_agent_startup {per_agent:.1}\n\
         figure faults_net_steady_rps {steady:.2}\nfigure faults_net_requests_during_cut {during}\n\
         figure faults_net_recovery_peak_rps {peak}\nfigure faults_net_recovery_requests {recovery_total}\n\
         figure faults_net_all_reconnected_s {reconnect_s:.1}\nfigure faults_net_cut_detected_s {detect_s:.1}\nper-second requests on recovery: {per_sec:?}"
    );
    // The whole fleet reconnecting at once costs `startup` requests (less: no
    // attestation); a storm is many times that in a second.
    let bound = 2 * startup;
    assert!(
        peak <= bound,
        "retry storm: {peak} requests in one second on recovery (one fleet reconnect is {startup})"
    );
    assert!(
        recovery_total <= 3 * startup,
        "{recovery_total} requests to recover (one fleet reconnect is {startup})"
    );
    drop(procs);
}
