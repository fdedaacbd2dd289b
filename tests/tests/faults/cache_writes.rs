//! The agent killed with SIGKILL while it writes its cache.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_agent::client::connect;
use lanyard_tests::rt;

use super::{
    check_data_dir, credentials, jwt_svid, jwt_svid_on, knob, local_agent, org_key, random_below,
    strip_ansi, temp_files, unix_now,
};

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
