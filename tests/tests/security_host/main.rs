//! The host security suite (issue 13): an unprivileged local user (uid 1001)
//! attacking the agent and other workloads, against real cgroups, namespaces
//! and processes. Each test is written from the attacker's side and names the
//! review finding it closes.
//!
//! The tests run as root, because only root can set up what a real host has:
//! a cgroup subtree delegated to a user (what systemd's `Delegate=yes` does for
//! `user@UID.service`), uids to switch to, and user namespaces mapped the way
//! `newuidmap` maps subordinate uids. The attacks themselves run as uid 1001
//! through `setpriv`.
#![allow(clippy::unwrap_used, clippy::panic)]

mod binaries;
mod cgroups;
mod exhaustion;
mod pid_file;
mod trusted_files;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::JwtsvidRequest;
use lanyard_tests::{lanyard_bin, rt, Deployment};

/// The attacker's uid.
pub(crate) const ATTACKER: u32 = 1001;

/// `setpriv` running the rest as `uid` (and gid), with no supplementary groups.
pub(crate) fn as_user(uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
    ]);
    c
}

/// A directory the attacker owns.
pub(crate) fn attacker_dir(d: &Deployment, name: &str) -> PathBuf {
    let p = d.dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::os::unix::fs::chown(&p, Some(ATTACKER), Some(ATTACKER)).unwrap();
    p
}

/// `lanyard fetch` into `out`: (success, stderr).
pub(crate) fn fetch_cmd(mut c: Command, socket: &Path, out: &Path) -> (bool, String) {
    let o = c
        .arg(lanyard_bin())
        .args(["fetch", "--socket", socket.to_str().unwrap()])
        .args(["--out-dir", out.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A JWT-SVID for this process (root) over `socket`, or the gRPC status.
pub(crate) fn jwt_svid(socket: &Path) -> Result<String, tonic::Status> {
    rt().block_on(async {
        let ch = connect(socket).await.unwrap();
        let r = SpiffeWorkloadApiClient::new(ch)
            .fetch_jwtsvid(with_header(JwtsvidRequest {
                audience: vec!["security".into()],
                spiffe_id: String::new(),
            }))
            .await?;
        Ok(r.into_inner().svids.remove(0).svid)
    })
}

/// `Command` output with bytes on stdin.
pub(crate) trait StdinBytes {
    fn stdin_bytes(&mut self, input: &[u8]) -> Vec<u8>;
}

impl StdinBytes for Command {
    fn stdin_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        let mut c = self
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        c.wait_with_output().unwrap().stdout
    }
}
