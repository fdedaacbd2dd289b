//! The `docker` workload attestor: `docker:label:<k>:<v>`, `docker:image_id:<id>`
//! and `docker:image:<name>` for a process in a container the Engine API knows
//! (dockerd, or `podman system service`). The container id comes from the
//! kernel's cgroup record ([`ContainerAttestor::info`]), never from the API, so
//! the API can only add facts about a container the kernel placed the process in.
//!
//! The client is minimal: `GET /containers/{id}/json` over the Unix socket,
//! through hyper ([`crate::http`]), with a deadline per attempt and a bounded
//! number of attempts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::container::{selector, ContainerAttestor};
use crate::{AttestError, ProcessRef, Selector, WorkloadAttestor};

/// The `docker` attestor.
#[derive(Debug, Clone)]
pub struct DockerAttestor {
    container: ContainerAttestor,
    client: DockerClient,
}

impl DockerAttestor {
    /// Asks the Engine API at `client` about containers `container` finds.
    pub fn new(container: ContainerAttestor, client: DockerClient) -> Self {
        Self { container, client }
    }
}

impl WorkloadAttestor for DockerAttestor {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Labels and image of the caller's container, once dockerd confirms that
    /// the container is running and that its init process is in the same
    /// cgroup directories that named it for the caller. A caller in a cgroup
    /// merely *named* after a container (a forged scope nested in another
    /// container's writable cgroupfs) gets nothing.
    fn attest(&self, p: &ProcessRef) -> Result<Vec<Selector>, AttestError> {
        let info = self.container.info(p.pid)?;
        let Some(id) = info.container_id.clone() else {
            return Ok(Vec::new());
        };
        // Unreachable after the bounded retries: fail closed, like every attestor.
        let meta = self.client.inspect(&id).map_err(|e| AttestError::Io {
            what: "docker API".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let Some(meta) = meta else {
            // A container of another runtime (containerd, CRI-O): nothing to add.
            return Ok(Vec::new());
        };
        if let Err(why) = self.confirm(&id, &info, meta.init_pid) {
            tracing::debug!(pid = p.pid, %why, "no docker selectors");
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (k, v) in &meta.labels {
            // A label that cannot be a selector (a control character) is left
            // out: a missing selector can only narrow what the caller matches.
            if let Ok(s) = selector("docker", "label", &format!("{k}:{v}")) {
                out.push(s);
            }
        }
        if !meta.image_id.is_empty() {
            out.push(selector("docker", "image_id", &meta.image_id)?);
        }
        if !meta.image.is_empty() {
            out.push(selector("docker", "image", &meta.image)?);
        }
        out.sort();
        Ok(out)
    }
}

impl DockerAttestor {
    /// Whether the container's init process is where the caller's cgroup path
    /// says the container is.
    fn confirm(
        &self,
        id: &str,
        caller: &crate::cgroup::CgroupInfo,
        init_pid: Option<i32>,
    ) -> Result<(), crate::cgroup::Distrust> {
        let not = |reason: String| crate::cgroup::Distrust::NotConfirmed {
            id: id.to_owned(),
            reason,
        };
        let pid = init_pid.ok_or_else(|| not("the container is not running".into()))?;
        let init = self
            .container
            .info(pid)
            .map_err(|e| not(format!("its init process {pid}: {e}")))?;
        if init.container_id.as_deref() != Some(id) || init.claims != caller.claims {
            return Err(not(format!(
                "its init process {pid} is in another cgroup ({:?})",
                init.claims.first().map(|c| c.dir.as_str())
            )));
        }
        Ok(())
    }
}

/// Largest response read (a container's inspect JSON is a few KiB).
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// What the Engine API says about a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMeta {
    /// `Image`: the image id (`sha256:…`).
    pub image_id: String,
    /// `Config.Image`: the image name it was started from.
    pub image: String,
    /// `Config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `State.Pid` while `State.Running`: the container's init process on the
    /// host, or `None` for a stopped container.
    pub init_pid: Option<i32>,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The socket could not be reached or the exchange timed out (after retries).
    #[error("docker API at {socket}: {source}")]
    Io {
        /// The socket.
        socket: String,
        /// The last error.
        source: crate::http::HttpError,
    },
    /// The API answered something this client cannot read.
    #[error("docker API answered unexpectedly: {0}")]
    Protocol(String),
}

/// A client with a per-attempt timeout and a bounded number of retries.
#[derive(Debug, Clone)]
pub struct DockerClient {
    socket: PathBuf,
    timeout: Duration,
    attempts: u32,
}

impl DockerClient {
    /// A client for `socket`: 2 s per attempt, 3 attempts.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(2),
            attempts: 3,
        }
    }

    /// The container `id`'s metadata; `None` if the API does not know it (a
    /// container of another runtime, or already gone).
    pub fn inspect(&self, id: &str) -> Result<Option<ContainerMeta>, DockerError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(DockerError::Protocol(format!("not a container id: {id:?}")));
        }
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            match self.get(&format!("/containers/{id}/json")) {
                Ok((404, _)) => return Ok(None),
                Ok((200, body)) => return parse_inspect(&body).map(Some),
                Ok((code, body)) => {
                    return Err(DockerError::Protocol(format!(
                        "HTTP {code}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    )))
                }
                Err(e) => last = Some(e),
            }
        }
        Err(DockerError::Io {
            socket: self.socket.display().to_string(),
            source: last.unwrap_or(crate::http::HttpError::Timeout(Duration::ZERO)),
        })
    }

    fn get(&self, path: &str) -> Result<(u16, hyper::body::Bytes), crate::http::HttpError> {
        let socket = self.socket.clone();
        let r = crate::http::get(
            move || tokio::net::UnixStream::connect(socket),
            "docker",
            path,
            &[],
            MAX_RESPONSE,
            self.timeout,
        )?;
        Ok((r.status, r.body))
    }
}

fn parse_inspect(body: &[u8]) -> Result<ContainerMeta, DockerError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DockerError::Protocol(e.to_string()))?;
    let labels = v["Config"]["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let init_pid = v["State"]["Pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .filter(|&p| p > 0 && v["State"]["Running"].as_bool() == Some(true));
    Ok(ContainerMeta {
        init_pid,
        image_id: v["Image"].as_str().unwrap_or_default().to_owned(),
        image: v["Config"]["Image"].as_str().unwrap_or_default().to_owned(),
        labels,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Read as _, Write as _};

    use super::*;

    /// A one-shot fake Engine API on a Unix socket answering `reply`.
    fn serve(reply: &'static str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let _ = c.write_all(reply.as_bytes());
            }
        });
        (dir, sock)
    }

    #[test]
    fn inspect_reads_labels_and_image() {
        let (_d, sock) = serve("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Image\":\"sha256:ab12\",\"Config\":{\"Image\":\"demo:1\",\"Labels\":{\"app\":\"demo\",\"tier\":\"web\"}}}");
        let m = DockerClient::new(sock).inspect("a1b2").unwrap().unwrap();
        assert_eq!(m.image_id, "sha256:ab12");
        assert_eq!(m.image, "demo:1");
        assert_eq!(m.labels["app"], "demo");
    }

    #[test]
    fn unknown_container_is_none_and_errors_are_clear() {
        let (_d, sock) = serve("HTTP/1.0 404 Not Found\r\n\r\n{\"message\":\"No such container\"}");
        assert!(DockerClient::new(&sock).inspect("a1b2").unwrap().is_none());
        assert!(matches!(
            DockerClient::new(&sock).inspect("../x"),
            Err(DockerError::Protocol(_))
        ));
        let missing = DockerClient {
            socket: "/nonexistent/docker.sock".into(),
            timeout: Duration::from_millis(50),
            attempts: 2,
        };
        assert!(matches!(
            missing.inspect("a1b2"),
            Err(DockerError::Io { .. })
        ));
    }
}
