//! CPU cost on the server side: a server process's utime + stime (from
//! `/proc/PID/stat`) per call or per short-lived client process, lanyard against
//! the constant-reply server under the same load.
//!
//! The short-lived clients are real processes: this binary re-executed as
//! `__once SOCKET`, which connects, fetches one JWT-SVID and exits (0 on success).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The `__once SOCKET` child: one connection, one FetchJWTSVID.
pub fn once(socket: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async {
        let Ok(ch) = lanyard_agent::client::connect(socket).await else {
            return false;
        };
        let mut c =
            lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
        c.fetch_jwtsvid(crate::probe::request()).await.is_ok()
    });
    std::process::exit(if ok { 0 } else { 1 });
}

/// One churn round against one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Churn {
    /// Processes started.
    pub procs: usize,
    /// Processes that exited non-zero (or could not be started).
    pub errors: usize,
    /// Processes started per second, over the round.
    pub rate: f64,
    /// Server CPU seconds per process.
    pub cpu_per_proc: f64,
}

/// Starts `__once SOCKET` processes at `target` per second for `dur` (at most
/// `max_in_flight` alive at a time), waits for all, and charges the server
/// process `pid` its CPU time over the round.
pub fn round(socket: &Path, pid: u32, target: f64, dur: Duration, max_in_flight: usize) -> Churn {
    let exe = std::env::current_exe().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<Child>();
    let reaper = {
        let in_flight = in_flight.clone();
        std::thread::spawn(move || {
            let mut errors = 0;
            for mut c in rx {
                if !c.wait().is_ok_and(|s| s.success()) {
                    errors += 1;
                }
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
            errors
        })
    };
    let cpu0 = crate::probe::cpu_secs(pid);
    let start = Instant::now();
    let (mut procs, mut spawn_errors) = (0usize, 0usize);
    let interval = Duration::from_secs_f64(1.0 / target);
    while start.elapsed() < dur {
        let due = start + interval * procs as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        while in_flight.load(Ordering::Acquire) >= max_in_flight {
            std::thread::sleep(Duration::from_micros(200));
        }
        in_flight.fetch_add(1, Ordering::AcqRel);
        procs += 1;
        match Command::new(&exe)
            .arg("__once")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => tx.send(c).unwrap(),
            Err(_) => {
                spawn_errors += 1;
                in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    let rate = procs as f64 / start.elapsed().as_secs_f64();
    drop(tx);
    let errors = reaper.join().unwrap() + spawn_errors;
    let cpu = crate::probe::cpu_secs(pid) - cpu0;
    Churn {
        procs,
        errors,
        rate,
        cpu_per_proc: cpu / procs as f64,
    }
}
