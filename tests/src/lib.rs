//! Helpers for the end-to-end tests: the real `lanyard` binary, a fresh org and
//! chain issuer, and an agent process that can be killed and restarted.
#![allow(clippy::unwrap_used, clippy::panic, clippy::missing_panics_doc)]

pub mod cgroups;
pub mod docker;
pub mod netns;
pub mod postgres;
pub mod procfs;

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

/// An agent config `[[entries]]` block: `spiffe://example.org/<subject>` for
/// callers with every one of `selectors`.
pub fn entry(subject: &str, selectors: &[&str]) -> String {
    let sel: Vec<String> = selectors.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[[entries]]\nsubject = \"spiffe://example.org/{subject}\"\nselectors = [{}]\n",
        sel.join(", ")
    )
}

/// Writes an agent config for `lanyard attest --config` alone: no files it
/// names are read, only its `[plugins.container]` table (`container`).
pub fn write_attest_config(path: &Path, container: &str) {
    std::fs::write(
        path,
        format!(
            "trust_domain = \"example.org\"\nsocket_path = \"s\"\ndata_dir = \"d\"\n\
             [authority]\nchain_jwt = \"c.jwt\"\nchain_seed = \"c.seed\"\norg_public = \"o.public\"\n\
             [plugins.container]\n{container}\n"
        ),
    )
    .unwrap();
}

/// The path of a helper script in `tests/python/`.
pub fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
        .display()
        .to_string()
}

/// A current-thread runtime for a test's async parts.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
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
        // LANYARD_KEEP_TMP=1 keeps the logs of a failed run for a look.
        if std::env::var_os("LANYARD_KEEP_TMP").is_some() {
            return;
        }
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

    /// Turns the health endpoint on at a free localhost port; returns the address.
    pub fn enable_health(&self) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let path = self.dir.join("agent.toml");
        let conf = std::fs::read_to_string(&path).unwrap().replace(
            "health_addr = \"off\"",
            &format!("health_addr = \"{addr}\""),
        );
        std::fs::write(path, conf).unwrap();
        addr
    }

    /// Starts the agent and waits until its socket accepts connections.
    pub fn start(&self) -> AgentProcess {
        let sock = self.socket();
        let _ = std::fs::remove_file(&sock);
        let cfg = self.dir.join("agent.toml");
        spawn_lanyard(
            &["agent", "--config", cfg.to_str().unwrap()],
            self.dir.join("agent.log"),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        )
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
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

/// A free TCP port on 127.0.0.1 (bound and released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `lanyard ARGS` with its stderr in `log`, and waits until `ready` holds.
pub fn spawn_lanyard(args: &[&str], log: PathBuf, ready: impl Fn() -> bool) -> AgentProcess {
    let mut cmd = Command::new(lanyard_bin());
    cmd.args(args);
    spawn_command(cmd, log, ready)
}

/// Starts `cmd` (`lanyard …`, or a wrapper such as `ip netns exec NS lanyard …`)
/// with its stderr in `log`, and waits until `ready` holds.
pub fn spawn_command(mut cmd: Command, log: PathBuf, ready: impl Fn() -> bool) -> AgentProcess {
    let args: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let child = cmd
        .env("LANYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut p = AgentProcess {
        child: Some(child),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{args:?} exited with {status}: {}", p.log());
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} did not start: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// An org, chain issuers for issuer replicas, and configs for issuers and
/// upstream-mode agents, all made with the CLI.
#[derive(Debug)]
pub struct Fleet {
    /// Where everything lives.
    pub dir: TempDir,
}

impl Fleet {
    /// `lanyard org init`.
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let d = dir.0.display().to_string();
        assert!(lanyard(&["org", "init", "--out", &format!("{d}/org")])
            .status
            .success());
        Self { dir }
    }

    /// Delegates a chain issuer for replica `name` and writes `name.toml` with
    /// the given store; returns the listen address.
    pub fn issuer_config(&self, name: &str, store: &str) -> String {
        self.issuer_config_with(name, store, "")
    }

    /// [`Fleet::issuer_config`] with extra TOML appended (e.g. `[limits]`).
    /// Top-level keys in `extra` (before its first table) go before `[authority]`.
    pub fn issuer_config_with(&self, name: &str, store: &str, extra: &str) -> String {
        let (top, tables) = extra.split_at(extra.find('[').unwrap_or(extra.len()));
        let d = self.dir.0.display().to_string();
        let out = lanyard(&[
            "org",
            "delegate",
            "--org-seed",
            &format!("{d}/org/org.seed"),
            "--out",
            &format!("{d}/{name}"),
            "--validity",
            "1d",
            "--role",
            "issuer",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listen = format!("127.0.0.1:{}", free_port());
        let health = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            self.dir.join(&format!("{name}.toml")),
            format!(
                "trust_domain = \"example.org\"\nlisten = \"{listen}\"\nadmin_socket = \"{name}/admin.sock\"\nstore = \"{store}\"\nhealth_addr = \"{health}\"\ndrain_timeout = \"2s\"\n{top}\
                 [authority]\nchain_jwt = \"{name}/chain.jwt\"\nchain_seed = \"{name}/chain.seed\"\norg_public = \"org/org.public\"\n{tables}"
            ),
        )
        .unwrap();
        listen
    }

    /// The admin socket of replica `name`.
    pub fn admin(&self, name: &str) -> String {
        self.dir
            .join(&format!("{name}/admin.sock"))
            .display()
            .to_string()
    }

    /// Starts replica `name` and waits for its admin socket.
    pub fn start_issuer(&self, name: &str) -> AgentProcess {
        let sock = self.dir.join(&format!("{name}/admin.sock"));
        let _ = std::fs::remove_file(&sock);
        let cfg = self.dir.join(&format!("{name}.toml"));
        spawn_lanyard(
            &["issuer", "--config", cfg.to_str().unwrap()],
            self.dir.join(&format!("{name}.log")),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        )
    }

    /// Runs an admin command against replica `name`; its stdout, trimmed.
    pub fn admin_cmd(&self, name: &str, args: &[&str]) -> String {
        let sock = self.admin(name);
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--admin-socket", &sock]);
        let out = lanyard(&a);
        assert!(
            out.status.success(),
            "lanyard {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes `agent-NAME.toml`: an upstream agent with a join token; returns
    /// its health address.
    pub fn agent_config(&self, name: &str, addresses: &str, join_token: &str) -> String {
        self.agent_config_with(name, addresses, &format!("join_token = \"{join_token}\""))
    }

    /// [`Fleet::agent_config`] with other node evidence (TOML lines in `[upstream]`).
    pub fn agent_config_with(&self, name: &str, addresses: &str, evidence: &str) -> String {
        let health = format!("127.0.0.1:{}", free_port());
        std::fs::write(
            self.dir.join(&format!("agent-{name}.toml")),
            format!(
                "trust_domain = \"example.org\"\nsocket_path = \"{name}/run/agent.sock\"\ndata_dir = \"{name}/data\"\nhealth_addr = \"{health}\"\ndrain_timeout = \"2s\"\n\
                 [upstream]\naddress = \"{addresses}\"\norg_public = \"org/org.public\"\n{evidence}\n"
            ),
        )
        .unwrap();
        health
    }

    /// The socket of agent `name`.
    pub fn agent_socket(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("{name}/run/agent.sock"))
    }

    /// Starts agent `name` and waits for its socket.
    pub fn start_agent(&self, name: &str) -> AgentProcess {
        let sock = self.agent_socket(name);
        let _ = std::fs::remove_file(&sock);
        let cfg = self.dir.join(&format!("agent-{name}.toml"));
        spawn_lanyard(
            &["agent", "--config", cfg.to_str().unwrap()],
            self.dir.join(&format!("agent-{name}.log")),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        )
    }
}

/// `GET path` on a plain-HTTP health address: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((
        code,
        out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned(),
    ))
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `secs` with `what`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a missing component must fail a test instead of skipping it: under
/// `scripts/test-all.sh` (which installs every component, and sets
/// `LANYARD_TEST_STRICT`) and under `CI`. Only a developer's ad-hoc run skips.
pub fn strict() -> bool {
    std::env::var_os("LANYARD_TEST_STRICT").is_some() || std::env::var_os("CI").is_some()
}

/// Skips the calling test with `why`, or fails it when [`strict`]: a test that
/// passes having checked nothing is worse than a failing one.
#[track_caller]
pub fn skip(why: &str) {
    assert!(!strict(), "missing component under the test script: {why}");
    eprintln!("SKIP: {why}");
}
