//! A private PostgreSQL server for tests: a fresh cluster in a temp dir, made
//! with Debian's server binaries, listening on 127.0.0.1 on a free port with
//! trust auth. It can be restarted on the same port and data; dropping it stops
//! it and removes the directory.
//!
//! PostgreSQL refuses to run as root, so as root the cluster belongs to the
//! `postgres` user (which the Debian package creates) and its programs run under
//! `runuser -u postgres --`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long start-up and shutdown may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some((uid, gid))` of `postgres` when running as root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgServer {
    /// Creates a cluster and starts the server; panics with a clear message if
    /// the server binaries are missing or it does not come up within 30 s.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lanyard-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run_as = (crate::my_uid() == 0).then(|| {
            let ids = postgres_user();
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).unwrap();
            ids
        });
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            run_as,
            child: None,
        };
        let out = pg
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--encoding=UTF8"])
            .arg("--pgdata")
            .arg(pg.data_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.launch();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Fast shutdown (SIGINT to the postmaster: open sessions are ended), and
    /// waits until it has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The postmaster's pid (under runuser it is not the child's).
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| child.id().to_string());
        let _ = Command::new("kill")
            .args(["-INT", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let _ = child.kill();
                let _ = child.wait();
                panic!("PostgreSQL did not stop within {TIMEOUT:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a stopped server again on the same port and data.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.launch();
        }
    }

    /// Stops the server and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `bin/<program>`, as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(_) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    /// Starts `postgres` and waits until it accepts connections.
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .unwrap();
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        let isready = Some(self.bin.join("pg_isready")).filter(|p| p.exists());
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("PostgreSQL exited with {status}: {}", self.log());
            }
            let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok();
            let ready = tcp
                && isready.as_ref().is_none_or(|p| {
                    Command::new(p)
                        .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                        .args(["-p", &self.port.to_string()])
                        .status()
                        .is_ok_and(|s| s.success())
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections on 127.0.0.1:{} within {TIMEOUT:?}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Do not panic while unwinding: best effort, then force.
            if let Some(pid) = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned))
            {
                let _ = Command::new("kill")
                    .args(["-INT", &pid])
                    .stderr(Stdio::null())
                    .status();
                let deadline = Instant::now() + TIMEOUT;
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `postgres`.
fn server_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL server binaries not found: run `apt-get install -y postgresql` \
             (scripts/test-all.sh does this)"
        ),
    }
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .unwrap_or_else(|| {
            panic!(
                "running as root, PostgreSQL needs the `postgres` user, which is missing: \
                 run `apt-get install -y postgresql` (scripts/test-all.sh does this)"
            )
        })
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
