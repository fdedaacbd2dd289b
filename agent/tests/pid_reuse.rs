//! A PID reused between accept and response never receives the old process's
//! identity. In-process agent (so a slow attestor can hold the request open),
//! a real client byte stream (grpc-python's FetchJWTSVID, captured), a real
//! process exit, and a real new process forced onto the same pid through
//! /proc/sys/kernel/ns_last_pid (needs root, as the agent itself does).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lanyard_agent::app;
use lanyard_agent::config::Config;
use lanyard_plugins::{AttestError, ProcessRef, Selector, WorkloadAttestor};

/// Holds every request for a while, as a slow Kubernetes lookup would, and first
/// writes the pid it is attesting to `marker`, so a client can tell that its
/// request is in flight.
#[derive(Debug)]
struct Slow {
    delay: Duration,
    marker: PathBuf,
}

impl WorkloadAttestor for Slow {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        let _ = std::fs::write(&self.marker, p.pid.to_string());
        std::thread::sleep(self.delay);
        Ok(vec![])
    }
}

fn setup(dir: &Path) -> Config {
    let uid = lanyard_agent::testing::my_uid();
    let entry = format!("[[entries]]\nsubject = \"spiffe://example.org/victim\"\nselectors = [\"unix:uid:{uid}\"]\n");
    lanyard_agent::testing::standalone(dir, &entry).unwrap()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/c_core_fetch_jwtsvid.bin")
}

/// Connects and sends the captured request. With `fork`, a forked child keeps
/// the connection and reads what comes back, while the connecting process exits
/// as soon as the agent is attesting it (the classic PID-reuse attack); without,
/// it reads for 3 s. Everything received is written to `out`.
fn client(socket: &Path, fork: bool, out: &Path, marker: &Path) -> std::process::Child {
    let script = "import os,socket,sys,time\n\
        s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(open(sys.argv[2],'rb').read())\n\
        me=str(os.getpid())\n\
        if sys.argv[4]=='fork' and os.fork()!=0:\n\
        \x20   end=time.time()+20\n\
        \x20   while time.time()<end:\n\
        \x20       try:\n\
        \x20           if open(sys.argv[5]).read()==me: break\n\
        \x20       except OSError: pass\n\
        \x20       time.sleep(0.005)\n\
        \x20   os._exit(0)\n\
        s.settimeout(0.1); end=time.time()+3; got=b''\n\
        while time.time()<end:\n\
        \x20   try:\n\
        \x20       d=s.recv(65536)\n\
        \x20       if not d: break\n\
        \x20       got+=d\n\
        \x20   except socket.timeout: pass\n\
        open(sys.argv[3],'wb').write(got)\n";
    Command::new("python3")
        .args(["-c", script])
        .arg(socket)
        .arg(fixture())
        .arg(out)
        .arg(if fork { "fork" } else { "stay" })
        .arg(marker)
        .spawn()
        .unwrap()
}

/// Starts a process that gets exactly `pid`, or None if another process won the race.
fn take_pid(pid: u32) -> Option<std::process::Child> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("writing ns_last_pid needs root");
    let mut c = Command::new("sleep").arg("5").spawn().unwrap();
    if c.id() == pid {
        Some(c)
    } else {
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn wait_for(bound: &app::Bound, rpc: &str, code: tonic::Code, n: u64) -> bool {
    for _ in 0..200 {
        if bound.metrics().count(rpc, code) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_pid_gets_no_identity() {
    let dir = std::env::temp_dir().join(format!("lanyard-pid-reuse-{}", std::process::id()));
    let config = setup(&dir);
    let socket = config.socket_path.clone();
    let marker = dir.join("attesting");
    let attestors = vec![
        app::default_attestors(&config).unwrap().remove(0),
        Box::new(Slow {
            delay: Duration::from_millis(1500),
            marker: marker.clone(),
        }) as Box<dyn WorkloadAttestor>,
    ];
    let bound = app::build_with(config, attestors).await.unwrap();

    // Control: the same captured request from a client that waits gets its JWT-SVID,
    // so the request itself is one that would be answered.
    let control_out = dir.join("control.out");
    let mut c = client(&socket, false, &control_out, &marker);
    assert!(
        wait_for(&bound, "FetchJWTSVID", tonic::Code::Ok, 1).await,
        "control request was not answered"
    );
    c.wait().unwrap();
    let got = std::fs::read(&control_out).unwrap();
    assert!(
        contains(&got, b"spiffe://example.org/victim"),
        "control client saw no SVID"
    );

    // The caller exits mid-request and a new process (same uid) takes its pid.
    let mut reused = None;
    let attack_out = dir.join("attack.out");
    for _ in 0..5 {
        let mut c = client(&socket, true, &attack_out, &marker);
        let pid = c.id();
        c.wait().unwrap(); // reaped: the pid is free again
        if let Some(p) = take_pid(pid) {
            reused = Some(p);
            break;
        }
    }
    let mut reused = reused.expect("could not place a new process on the old pid");
    assert!(
        wait_for(&bound, "FetchJWTSVID", tonic::Code::Unauthenticated, 1).await,
        "the reused pid's request was not refused"
    );
    assert_eq!(
        bound.metrics().count("FetchJWTSVID", tonic::Code::Ok),
        1,
        "an identity went out after the pid was reused"
    );
    // The forked holder of the connection got no SVID either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = std::fs::read(&attack_out).unwrap_or_default();
    assert!(
        !contains(&got, b"spiffe://example.org/victim"),
        "the SVID reached the connection after pid reuse"
    );
    let _ = reused.kill();
    let _ = reused.wait();
    bound.drain().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
