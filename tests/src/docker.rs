//! A private containerd + dockerd started by hand (there is no systemd here),
//! with an image imported from a local busybox rootfs (nothing can be pulled).
//! Debian's `docker.io` and `busybox-static` packages provide the binaries;
//! `scripts/test-all.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The image every container test runs.
pub const IMAGE: &str = "lanyard-test:busybox";

/// A running dockerd with its own containerd, data and sockets under a temp dir.
#[derive(Debug)]
pub struct DockerDaemon {
    dir: PathBuf,
    containerd: Child,
    dockerd: Child,
}

/// Why no daemon could run.
#[derive(Debug)]
pub struct CannotRun(pub String);

fn wait_socket(p: &Path, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl DockerDaemon {
    /// Starts containerd and dockerd and imports [`IMAGE`]. `Err` says why the
    /// machine cannot run containers at all (the caller skips with that message).
    pub fn start() -> Result<Self, CannotRun> {
        for bin in ["dockerd", "containerd", "docker"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
            {
                panic!("{bin} not found: run `apt-get install -y docker.io busybox-static` (scripts/test-all.sh does this)");
            }
        }
        assert!(
            Path::new("/bin/busybox").exists(),
            "/bin/busybox not found: run `apt-get install -y busybox-static` (scripts/test-all.sh does this)"
        );
        let dir = std::env::temp_dir().join(format!("lanyard-docker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| CannotRun(e.to_string()))?;
        let log =
            |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).expect("log file"));
        let containerd = Command::new("containerd")
            .args([
                "--root",
                &path(&dir, "containerd"),
                "--state",
                &path(&dir, "containerd-state"),
            ])
            .args(["--address", &path(&dir, "containerd.sock")])
            .stdout(Stdio::null())
            .stderr(log("containerd.log"))
            .spawn()
            .map_err(|e| CannotRun(format!("containerd: {e}")))?;
        let dockerd = Command::new("dockerd")
            .args(["--containerd", &path(&dir, "containerd.sock")])
            .args([
                "--data-root",
                &path(&dir, "docker"),
                "--exec-root",
                &path(&dir, "exec"),
            ])
            .args(["--pidfile", &path(&dir, "docker.pid")])
            .args(["-H", &format!("unix://{}", path(&dir, "docker.sock"))])
            .args(["--iptables=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log("dockerd.log"))
            .spawn()
            .map_err(|e| CannotRun(format!("dockerd: {e}")))?;
        let d = Self {
            dir,
            containerd,
            dockerd,
        };
        if !wait_socket(&d.socket(), 30) {
            let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
            return Err(CannotRun(format!(
                "dockerd did not come up: {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            )));
        }
        d.import_image()?;
        Ok(d)
    }

    /// The Engine API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `docker ARGS` against this daemon; stdout, trimmed. Panics on failure.
    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .args(args)
            .output()
            .expect("docker client");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn import_image(&self) -> Result<(), CannotRun> {
        let rootfs = self.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).map_err(|e| CannotRun(e.to_string()))?;
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .map_err(|e| CannotRun(e.to_string()))?;
        for applet in ["sh", "sleep", "cat", "ls"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let tar = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | DOCKER_HOST=unix://{} docker import - {IMAGE}",
                rootfs.display(),
                self.socket().display()
            ))
            .output()
            .map_err(|e| CannotRun(e.to_string()))?;
        if !tar.status.success() {
            return Err(CannotRun(format!(
                "docker import: {}",
                String::from_utf8_lossy(&tar.stderr)
            )));
        }
        Ok(())
    }

    /// The host pid of a running container.
    pub fn pid(&self, container: &str) -> i32 {
        self.docker(&["inspect", "-f", "{{.State.Pid}}", container])
            .parse()
            .expect("pid")
    }
}

fn path(dir: &Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

impl Drop for DockerDaemon {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "DOCKER_HOST=unix://{} docker rm -f $(DOCKER_HOST=unix://{} docker ps -aq) >/dev/null 2>&1",
                self.socket().display(),
                self.socket().display()
            ))
            .status();
        let _ = self.dockerd.kill();
        let _ = self.dockerd.wait();
        let _ = self.containerd.kill();
        let _ = self.containerd.wait();
        // Overlay mounts under the data root are gone with the daemon; what is
        // left is plain files.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '$2 ~ \"^{}\" {{print $2}}' /proc/mounts | sort -r | xargs -r umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
