//! The issuer killed during sync and signing, and PostgreSQL restarted under it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanyard_tests::{http_get, rt, wait_for, Fleet};

use super::fleet::{
    connected, create_entry, persisted_entries, svid_ids, toml_str, upstream_agent,
};
use super::{credentials, jwt_svid, knob, org_key, random_below, unix_now};

/// The issuer is `kill -9`ed while an agent's first full `Sync` of thousands of
/// entries is in flight and while a workload keeps asking it for new
/// credentials, several times. The agent's persisted entry set is always none
/// or all of them (one sync message is one revision), every answer is either
/// the complete set of this process's credentials, each verifying, or an
/// error; after the last restart the agent has every entry and serves.
#[test]
fn issuer_killed_during_sync_and_signing() {
    let bulk = knob("SYNC_ENTRIES", 3000) as usize;
    let rounds = knob("ISSUER_KILLS", 4);
    let f = Fleet::new("faults-issuer-kill");
    let addr = f.issuer_config("issuer1", "sqlite://issuer1/issuer.db");
    // Thousands of entries for this node (for other uids, as urn: names so
    // the agent does not pre-mint them), straight into the store.
    rt().block_on(async {
        let store = lanyard_issuer::store::open(&format!(
            "sqlite://{}",
            f.dir.join("issuer1/issuer.db").display()
        ))
        .await
        .unwrap();
        for i in 0..bulk {
            store
                .create_entry(&lanyard_issuer::store::NewEntry {
                    subject: format!("urn:lanyard:bulk:{i}"),
                    selectors: vec![format!("unix:uid:{}", 4_000_000 + i)],
                    node_selectors: vec!["join:name:gw1".into()],
                    ttl_secs: 3600,
                    audiences: vec![],
                    networks: vec![],
                })
                .await
                .unwrap();
        }
    });
    let org = org_key(&f.dir.join("org/org.public"));
    let mut issuer = f.start_issuer("issuer1");
    let health = upstream_agent(&f, "gw1", &addr);
    let mine: BTreeSet<String> = (0..3)
        .map(|i| {
            let s = format!("spiffe://example.org/mine/{i}");
            create_entry(&f, &s, "gw1");
            s
        })
        .collect();
    let total = bulk + mine.len();
    let sock = f.agent_socket("gw1");
    let agent = f.start_agent("gw1");

    // A workload asking for new credentials all along (signing by the issuer).
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let (stop, sock, mine) = (stop.clone(), sock.clone(), mine.clone());
        std::thread::spawn(move || {
            let (mut complete, mut failed) = (0u32, 0u32);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match rt().block_on(credentials(&sock, &format!("w{n}"), org, unix_now())) {
                    Ok(got) if got.is_empty() => failed += 1,
                    Ok(got) => {
                        let subjects: BTreeSet<String> = got.into_iter().map(|c| c.0).collect();
                        assert_eq!(subjects, mine, "a partial set of identities was served");
                        complete += 1;
                    }
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (complete, failed)
        })
    };
    for round in 0..rounds {
        // Kill somewhere in the reconnect, sync and signing that follow a start.
        std::thread::sleep(Duration::from_millis(200 + random_below(1500)));
        issuer.kill9();
        let n = persisted_entries(&f, "gw1");
        println!("issuer kill {round}: the agent holds {n} of {total} entries");
        assert!(
            n == 0 || n == total,
            "kill {round}: the agent persisted a partial entry set ({n} of {total})"
        );
        std::thread::sleep(Duration::from_millis(random_below(1000)));
        issuer = f.start_issuer("issuer1");
    }
    // Converges: every entry, connected, serving.
    wait_for(90, "the agent to reconnect after the last restart", || {
        connected(&health)
    });
    wait_for(30, "all entries persisted", || {
        (persisted_entries(&f, "gw1") == total).then_some(())
    });
    let got = wait_for(30, "the complete identity set", || {
        rt().block_on(credentials(&sock, "final", org, unix_now()))
            .ok()
    });
    assert_eq!(got.into_iter().map(|c| c.0).collect::<BTreeSet<_>>(), mine);
    assert_eq!(svid_ids(&sock).unwrap(), mine);
    stop.store(true, Ordering::Relaxed);
    let (complete, failed) = workload.join().unwrap();
    println!("figure faults_issuer_kills {rounds}\nfigure faults_issuer_kill_complete_answers {complete}\nfigure faults_issuer_kill_failed_answers {failed}");
    assert!(complete > 0, "the workload never got its credentials");
    drop(agent);
    drop(issuer);
}

/// PostgreSQL stops under a running issuer: the issuer stays up and reports not
/// ready, the agent serves what it has, signing answers cleanly (a valid
/// credential or an error, within seconds), admin writes fail cleanly; after
/// PostgreSQL is back, an entry created then reaches the agent.
#[test]
fn postgres_restarted_under_a_running_issuer() {
    let mut pg = lanyard_tests::postgres::PgServer::start();
    let f = Fleet::new("faults-pg");
    let addr = f.issuer_config("issuer1", &pg.url());
    let ihealth = toml_str(&f.dir.join("issuer1.toml"), "health_addr");
    let mut issuer = f.start_issuer("issuer1");
    let health = upstream_agent(&f, "gw1", &addr);
    let _agent = f.start_agent("gw1");
    let sock = f.agent_socket("gw1");
    wait_for(20, "agent connected", || connected(&health));
    create_entry(&f, "spiffe://example.org/pg/before", "gw1");
    let (_, before, _) = wait_for(10, "the entry at the agent", || {
        rt().block_on(jwt_svid(&sock, "pg-a")).ok()
    });

    pg.stop();
    let (_, body) = wait_for(10, "the issuer to report the store down", || {
        http_get(&ihealth, "/readyz").filter(|(c, b)| *c == 503 && b.contains("store"))
    });
    println!("PostgreSQL down: issuer /readyz: {}", body.trim());
    assert!(
        issuer.running(),
        "the issuer exited when PostgreSQL stopped"
    );
    // Cached: the same credential.
    assert_eq!(rt().block_on(jwt_svid(&sock, "pg-a")).unwrap().1, before);
    // New signing: a clean answer, soon.
    let t = Instant::now();
    match rt().block_on(jwt_svid(&sock, "pg-b")) {
        Ok((_, _, exp)) => assert!(exp > unix_now()),
        Err(e) => println!("signing during the outage: {e}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "signing hung for {:?}",
        t.elapsed()
    );
    // An admin write fails, and does not hang.
    let t = Instant::now();
    let out = lanyard_tests::lanyard(&[
        "entry",
        "create",
        "--admin-socket",
        &f.admin("issuer1"),
        "--subject",
        "spiffe://example.org/pg/lost",
        "--selector",
        "unix:uid:1",
        "--node-selector",
        "join:name:gw1",
    ]);
    assert!(
        !out.status.success(),
        "an entry was created with the store down"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "admin write hung {:?}",
        t.elapsed()
    );

    pg.start_again();
    wait_for(30, "the issuer ready again", || {
        http_get(&ihealth, "/readyz").filter(|(c, _)| *c == 200)
    });
    assert!(issuer.running());
    create_entry(&f, "spiffe://example.org/pg/after", "gw1");
    wait_for(
        15,
        "the entry created after the restart at the agent",
        || svid_ids(&sock).filter(|ids| ids.contains("spiffe://example.org/pg/after")),
    );
    let _ = &mut issuer;
}
