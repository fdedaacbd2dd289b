//! Findings 7 to 9: connection slots, the health endpoint and HTTP/2 streams under flood.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::X509svidRequest;
use lanyard_tests::{entry, lanyard_bin, rt, script, Deployment};

use super::{as_user, fetch_cmd, jwt_svid, ATTACKER};

// ---------------------------------------------------------------------------
// Finding 7: connection slots, from several uids at once.

/// Runs `hold_slots.py` inside a user namespace that `ATTACKER` made, with the
/// attacker as root in it and uids 1..3 mapped to subordinate host uids
/// 200000..200002 by a privileged helper (what `newuidmap` does for
/// `unshare --map-auto`): four host uids, one user.
fn hold_slots(socket: &Path, per_uid: usize) -> (Child, usize) {
    let mut c = as_user(ATTACKER)
        .args(["unshare", "--user", "sh", "-c"])
        .arg(format!(
            "read _ && exec /usr/bin/python3 {} {} {per_uid} 0 1 2 3",
            script("hold_slots.py"),
            socket.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // setpriv execs unshare, which unshares and execs sh: wait for the new
    // namespace, then map it.
    let pid = c.id();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .ok()
        .as_ref()
        == Some(&own)
        || std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|e| !e.ends_with("sh") && !e.ends_with("dash") && !e.ends_with("bash"))
    {
        assert!(Instant::now() < deadline, "no user namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    let map = format!("0 {ATTACKER} 1\n1 200000 3\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).unwrap();
    c.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let held = line.trim().strip_prefix("held ").unwrap().parse().unwrap();
    (c, held)
}

#[test]
fn attacker_with_subordinate_uids_cannot_take_every_connection() {
    let d = Deployment::new(
        "sec-slots",
        &format!(
            "{}{}[connections]\nmax_total = 64\nmax_per_uid = 16\nfirst_byte_timeout = \"60s\"\n",
            entry("root", &["unix:uid:0"]),
            entry("other", &["unix:uid:1002"])
        ),
    );
    let _agent = d.start();
    // (`first_byte_timeout`: `idle_timeout`'s old name, which every version
    // reads, so that this test also runs against the code before the fix.)
    // Four uids, 32 connections each: counted by uid they would fill all 64.
    let (mut attacker, held) = hold_slots(&d.socket(), 32);
    assert_eq!(held, 16, "all of a user's uids count as that user");
    // Root and another user are still served while the attacker holds its share.
    jwt_svid(&d.socket()).unwrap();
    let other = d.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::chown(&other, Some(1002), Some(1002)).unwrap();
    let (ok, err) = fetch_cmd(as_user(1002), &d.socket(), &other.join("out"));
    assert!(ok, "{err}");
    drop(attacker.stdin.take());
    attacker.wait().unwrap();
}

#[test]
fn attacker_connections_that_never_complete_a_request_are_closed() {
    let d = Deployment::new(
        "sec-idle",
        &format!(
            "{}[connections]\nfirst_byte_timeout = \"2s\"\n",
            entry("root", &["unix:uid:0"])
        ),
    );
    let _agent = d.start();
    // Each connection sends the HTTP/2 preface, which once reset the timer.
    let (mut attacker, held) = hold_slots(&d.socket(), 8);
    assert!(held > 0);
    std::thread::sleep(Duration::from_secs(4));
    drop(attacker.stdin.take());
    let out = attacker.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("closed {held}")), "{text}");
}

// ---------------------------------------------------------------------------
// Finding 8: the health endpoint.

#[test]
fn attacker_floods_the_health_endpoint_and_fetches_still_work() {
    let d = Deployment::new("sec-health", &entry("root", &["unix:uid:0"]));
    let addr = d.enable_health();
    let cfg = d.dir.join("agent.toml");
    // The agent with systemd's default soft limit of 1,024 descriptors.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=1024:1024", "--"])
        .arg(lanyard_bin())
        .args(["agent", "--config", cfg.to_str().unwrap()]);
    let sock = d.socket();
    let agent = lanyard_tests::spawn_command(cmd, d.dir.join("agent.log"), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    // 1,100 idle TCP connections from uid 1001, held open.
    let flood = "import socket,sys\n\
        host,port=sys.argv[1].rsplit(':',1); conns=[]\n\
        for _ in range(1100):\n\
        \x20   try:\n\
        \x20       conns.append(socket.create_connection((host,int(port)),timeout=2))\n\
        \x20   except OSError: pass\n\
        print(len(conns),flush=True); sys.stdin.read()\n";
    let mut attacker = as_user(ATTACKER)
        .args(["/usr/bin/python3", "-c", flood, &addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(attacker.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // The agent holds at most its cap of them, and keeps descriptors to spare.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))
        .unwrap()
        .count();
    assert!(
        fds < 200,
        "the agent holds {fds} descriptors during the flood"
    );
    jwt_svid(&d.socket()).unwrap();
    let (ok, err) = fetch_cmd(Command::new("env"), &d.socket(), &d.dir.join("out"));
    assert!(ok, "{err}");
    // The health endpoint still answers a prober: the oldest idle connection
    // makes room for it.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let probe = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
            let mut resp = String::new();
            std::io::Read::read_to_string(&mut s, &mut resp)?;
            Ok(resp)
        };
        match probe() {
            Ok(r) if r.contains(" 200 ") => break,
            other => assert!(
                Instant::now() < deadline,
                "/healthz never answered: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(attacker.stdin.take());
    attacker.wait().unwrap();
}

// ---------------------------------------------------------------------------
// Finding 9: HTTP/2 streams.

#[test]
fn attacker_cannot_open_thousands_of_watch_streams() {
    // MAX_CONCURRENT_STREAMS is advertised before any request, with the
    // default config.
    let d = Deployment::new("sec-settings", &entry("root", &["unix:uid:0"]));
    let agent = d.start();
    let o = Command::new("/usr/bin/python3")
        .arg(script("h2_settings.py"))
        .arg(d.socket())
        .output()
        .unwrap();
    let settings = String::from_utf8_lossy(&o.stdout);
    assert!(
        settings.lines().any(|l| l == "3=32"),
        "SETTINGS: {settings}"
    );
    drop(agent);
    let d = Deployment::new(
        "sec-streams",
        &format!(
            "{}[connections]\nmax_streams_per_uid = 8\n",
            entry("root", &["unix:uid:0"])
        ),
    );
    let _agent = d.start();
    // One identity, many watch streams over two connections: 8 are served,
    // the rest refused.
    let (ok, exhausted) = rt().block_on(async {
        let mut ok = 0;
        let mut exhausted = 0;
        let mut keep = Vec::new();
        for _ in 0..2 {
            let ch = connect(&d.socket()).await.unwrap();
            for _ in 0..6 {
                let mut c = SpiffeWorkloadApiClient::new(ch.clone());
                match c.fetch_x509svid(with_header(X509svidRequest {})).await {
                    Ok(r) => {
                        let mut s = r.into_inner();
                        match s.message().await {
                            Ok(Some(_)) => {
                                ok += 1;
                                keep.push(s);
                            }
                            Err(st) if st.code() == tonic::Code::ResourceExhausted => {
                                exhausted += 1
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    Err(st) if st.code() == tonic::Code::ResourceExhausted => exhausted += 1,
                    Err(st) => panic!("unexpected {st:?}"),
                }
            }
        }
        (ok, exhausted)
    });
    assert_eq!((ok, exhausted), (8, 4));
}
