//! Helpers for the end-to-end tests: the real `lanyard` binary, a fresh org and
//! chain issuer, and an agent process that can be killed and restarted.
#![allow(clippy::unwrap_used, clippy::panic, clippy::missing_panics_doc)]

pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lanyard` binary that `cargo test --workspace` built beside this test.
pub fn lanyard_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LANYARD_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/lanyard
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("lanyard");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p lanyard` (scripts/test-all.sh does)",
        bin.display()
    );
    bin
}

/// Runs `lanyard args…`.
pub fn lanyard(args: &[&str]) -> Output {
    Command::new(lanyard_bin()).args(args).output().unwrap()
}

/// The uid this test runs as.
pub fn my_uid() -> u32 {
    lanyard_agent::peer::current_uid()
}

/// A temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory (world-traversable so that other uids can reach the socket).
    pub fn new(name: &str) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let p = std::env::temp_dir().join(format!("lanyard-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self(p)
    }
    /// A path inside it.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An org and a chain issuer made with the CLI, plus an agent config.
#[derive(Debug)]
pub struct Deployment {
    /// Where everything lives.
    pub dir: TempDir,
}

impl Deployment {
    /// `lanyard org init` + `lanyard org delegate`, and an agent config whose
    /// entries are given as TOML.
    pub fn new(name: &str, entries_toml: &str) -> Self {
        let dir = TempDir::new(name);
        let d = dir.0.display().to_string();
        assert!(lanyard(&["org", "init", "--out", &format!("{d}/org")])
            .status
            .success());
        let out = lanyard(&[
            "org",
            "delegate",
            "--org-seed",
            &format!("{d}/org/org.seed"),
            "--out",
            &format!("{d}/chain"),
            "--validity",
            "1d",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = format!(
            "trust_domain = \"example.org\"\nsocket_path = \"run/agent.sock\"\ndata_dir = \"data\"\nhealth_addr = \"off\"\ndrain_timeout = \"5s\"\n\
             [authority]\nchain_jwt = \"chain/chain.jwt\"\nchain_seed = \"chain/chain.seed\"\norg_public = \"org/org.public\"\n{entries_toml}"
        );
        std::fs::write(dir.join("agent.toml"), config).unwrap();
        Self { dir }
    }

    /// The agent socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/agent.sock")
    }

    /// Starts the agent and waits until its socket accepts connections.
    pub fn start(&self) -> AgentProcess {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(lanyard_bin())
            .args([
                "agent",
                "--config",
                self.dir.join("agent.toml").to_str().unwrap(),
            ])
            .env("LANYARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("agent.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut agent = AgentProcess {
            child: Some(child),
            log: self.dir.join("agent.log"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("agent exited with {status}: {}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not start: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }
}

/// A running agent process.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl AgentProcess {
    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no drain, no final cache write.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
