//! `lanyard fetch`: the sidecar. Fetches the caller's credentials from the agent
//! socket and writes them as files, each replaced atomically; with `--watch` it
//! keeps them fresh and signals or restarts a child only once every file is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lanyard_agent::client::{connect, with_header};
use lanyard_agent::fsutil::{write_atomic, Replace};
use lanyard_agent::pem;
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, X509svidRequest};
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::FetchCredentialsRequest;
use tonic::transport::Channel;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The agent's Workload API socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// Where to write the files.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Audiences for the JWT-SVIDs and the seed + JWT credential (repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Keep the files fresh: rewrite them whenever the agent rotates.
    #[arg(long)]
    pub watch: bool,
    /// Send this signal to the process in --pid-file after each update (HUP,
    /// SIGHUP, TERM, INT, QUIT, USR1, USR2, WINCH, CONT).
    #[arg(long, requires = "pid_file", value_parser = parse_signal)]
    pub signal: Option<rustix::process::Signal>,
    /// The process to signal.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Run this command once the files exist, and restart it after each update.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, conflicts_with = "signal")]
    pub exec: Vec<String>,
}

/// One complete set of files, in memory, so that they are written together.
struct Files(Vec<(String, Vec<u8>, u32)>);

async fn collect(channel: &Channel, audiences: &[String]) -> Result<Files> {
    let mut files = Vec::new();
    let mut creds = CredentialsClient::new(channel.clone());
    let mut stream = creds
        .fetch_credentials(with_header(FetchCredentialsRequest {
            audiences: audiences.to_vec(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("agent refused credentials: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .context("agent closed the stream")?;
    let c = first.credentials.first().context("no credential issued")?;
    files.push((
        "credential.seed".to_owned(),
        c.seed.clone().into_bytes(),
        0o600,
    ));
    files.push((
        "credential.jwt".to_owned(),
        c.jwt.clone().into_bytes(),
        0o644,
    ));
    files.push((
        "org.public".to_owned(),
        c.org_public.clone().into_bytes(),
        0o644,
    ));

    let mut spiffe = SpiffeWorkloadApiClient::new(channel.clone());
    // SPIFFE SVIDs exist only for spiffe:// identities; a urn: identity has none.
    if let Ok(resp) = spiffe.fetch_x509svid(with_header(X509svidRequest {})).await {
        if let Ok(Some(x)) = resp.into_inner().message().await {
            if let Some(svid) = x.svids.first() {
                let svid_pem = pem::certs(&svid.x509_svid);
                files.push(("svid.pem".to_owned(), svid_pem.into_bytes(), 0o644));
                let key = pem::encode("PRIVATE KEY", &svid.x509_svid_key);
                files.push(("svid.key".to_owned(), key.into_bytes(), 0o600));
                let bundle = pem::certs(&svid.bundle);
                files.push(("bundle.pem".to_owned(), bundle.into_bytes(), 0o644));
            }
        }
        for aud in audiences {
            let r = spiffe
                .fetch_jwtsvid(with_header(JwtsvidRequest {
                    audience: vec![aud.clone()],
                    spiffe_id: String::new(),
                }))
                .await;
            if let Some(s) = r.ok().and_then(|r| r.into_inner().svids.into_iter().next()) {
                let safe: String = aud
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                files.push((format!("jwt_svid.{safe}.token"), s.svid.into_bytes(), 0o600));
            }
        }
    }
    Ok(Files(files))
}

fn write_all(dir: &Path, files: &Files) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes, mode) in &files.0 {
        write_atomic(&dir.join(name), bytes, *mode, Replace::Yes)
            .with_context(|| format!("cannot write {name}"))?;
    }
    Ok(())
}

/// The signals a sidecar may send to tell a server to reload. `KILL` and `STOP`
/// are not among them: they reload nothing.
const SIGNALS: &[(&str, rustix::process::Signal)] = &[
    ("HUP", rustix::process::Signal::HUP),
    ("TERM", rustix::process::Signal::TERM),
    ("INT", rustix::process::Signal::INT),
    ("QUIT", rustix::process::Signal::QUIT),
    ("USR1", rustix::process::Signal::USR1),
    ("USR2", rustix::process::Signal::USR2),
    ("WINCH", rustix::process::Signal::WINCH),
    ("CONT", rustix::process::Signal::CONT),
];

fn parse_signal(text: &str) -> Result<rustix::process::Signal, String> {
    let name = text.trim().to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            format!("unknown signal {text:?}; use one of {}", names.join(", "))
        })
}

/// The process id in a pid file: one positive decimal number greater than 1.
///
/// The file is often writable by the workload, and the sidecar often runs as
/// root, so its content is untrusted: `-1` would signal every process the
/// sidecar may signal (`kill(-1, SIG)`), `0` its own process group, a negative
/// number a process group, and `1` the init process.
fn read_pid_file(path: &Path) -> Result<rustix::process::Pid> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--pid-file {}: cannot read it", path.display()))?;
    parse_pid(path, &text)
}

fn parse_pid(path: &Path, text: &str) -> Result<rustix::process::Pid> {
    let trimmed = text.trim();
    let pid: i32 = trimmed
        .parse()
        .ok()
        .filter(|_| trimmed.bytes().all(|b| b.is_ascii_digit()))
        .with_context(|| {
            format!(
                "--pid-file {}: {trimmed:?} is not a process id",
                path.display()
            )
        })?;
    if pid <= 1 {
        bail!(
            "--pid-file {}: pid {pid} is not allowed (it must be greater than 1)",
            path.display()
        );
    }
    rustix::process::Pid::from_raw(pid)
        .with_context(|| format!("--pid-file {}: {pid} is not a process id", path.display()))
}

/// Signals the process the pid file names, if whoever owns the pid file may
/// name it.
///
/// A pid file owned by another user than root is that user's word, so it may
/// only name that user's processes: a workload that can write its server's pid
/// file cannot make a root sidecar kill the kubelet. The signal goes through a
/// pidfd taken before the check, so a pid reused in between gets nothing.
fn signal_pid_file(pid_file: &Path, sig: rustix::process::Signal) -> Result<()> {
    let shown = pid_file.display();
    let (text, owner) =
        read_owned(pid_file).with_context(|| format!("--pid-file {shown}: cannot read it"))?;
    let pid = parse_pid(pid_file, &text)?;
    let raw = pid.as_raw_nonzero();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .with_context(|| format!("--pid-file {shown}: no process {raw}"))?;
    let (real, effective) = lanyard_agent::peer::real_and_effective_uid(raw.get())
        .with_context(|| format!("--pid-file {shown}: no process {raw}"))?;
    if owner != 0 && real != owner && effective != owner {
        bail!(
            "--pid-file {shown}: the file belongs to uid {owner}, but process {raw} runs as uid {effective}; not signalling it"
        );
    }
    rustix::process::pidfd_send_signal(&pidfd, sig)
        .with_context(|| format!("could not signal pid {raw} with {sig:?}"))
}

/// The text of a regular file, read without following a symlink, and whose
/// word it is: its owner, or, for a root-owned file in a directory another
/// user owns (who could have put it there), that user.
fn read_owned(path: &Path) -> std::io::Result<(String, u32)> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    // Not a symlink, and the file opened is the one looked at: a swap in
    // between shows as another device and inode.
    let link = std::fs::symlink_metadata(path)?;
    if !link.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a symlink is not accepted)",
        ));
    }
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
        return Err(std::io::Error::other(
            "the file changed while it was opened",
        ));
    }
    let mut text = String::new();
    f.by_ref().take(64).read_to_string(&mut text)?;
    let dir_owner = path
        .parent()
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .and_then(|d| std::fs::metadata(d).ok())
        .map_or(0, |m| m.uid());
    let owner = if meta.uid() == 0 {
        dir_owner
    } else {
        meta.uid()
    };
    Ok((text, owner))
}

fn notify(a: &FetchArgs, child: &mut Option<std::process::Child>) -> Result<()> {
    if let (Some(sig), Some(pid_file)) = (a.signal, &a.pid_file) {
        // Read again each time: the server may have restarted with a new pid.
        signal_pid_file(pid_file, sig)?;
    }
    if let Some((cmd, args)) = a.exec.split_first() {
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        *child = Some(
            std::process::Command::new(cmd)
                .args(args)
                .spawn()
                .with_context(|| format!("cannot run {cmd}"))?,
        );
    }
    Ok(())
}

pub fn run(a: &FetchArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // A bad pid file is an error now, not after the first fetch.
    if let (Some(_), Some(pid_file)) = (a.signal, &a.pid_file) {
        read_pid_file(pid_file)?;
    }
    rt.block_on(async {
        let channel = connect(&a.socket)
            .await
            .with_context(|| format!("cannot connect to the agent at {}", a.socket.display()))?;
        let mut child = None;
        let mut last: Option<Vec<(String, Vec<u8>, u32)>> = None;
        loop {
            let files = collect(&channel, &a.audiences).await?;
            if last.as_ref() != Some(&files.0) {
                write_all(&a.out_dir, &files)?;
                println!("wrote {} files to {}", files.0.len(), a.out_dir.display());
                notify(a, &mut child)?;
                last = Some(files.0);
            }
            if !a.watch {
                return Ok(ExitCode::SUCCESS);
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_name_one_process_greater_than_1() {
        let dir = std::env::temp_dir().join(format!("lanyard-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pid");
        for (text, ok) in [
            ("4242\n", true),
            (" 77 ", true),
            ("-1", false),
            ("-999999", false),
            ("0", false),
            ("1", false),
            ("+5", false),
            ("12 13", false),
            ("abc", false),
            ("", false),
            ("99999999999", false),
        ] {
            std::fs::write(&f, text).unwrap();
            assert_eq!(read_pid_file(&f).is_ok(), ok, "{text:?}");
        }
        let err = read_pid_file(&dir.join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pid_file_is_read_only_as_a_regular_file_and_owned_by_its_directory() {
        let dir = std::env::temp_dir().join(format!("lanyard-pidown-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pid");
        std::fs::write(&f, "4242").unwrap();
        let (text, owner) = read_owned(&f).unwrap();
        assert_eq!(text, "4242");
        assert_eq!(owner, rustix::process::geteuid().as_raw());
        // A symlink to a file someone else wrote is not read.
        let link = dir.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_owned(&link).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(parse_signal("HUP"), Ok(rustix::process::Signal::HUP));
        assert_eq!(parse_signal("sighup"), Ok(rustix::process::Signal::HUP));
        assert_eq!(parse_signal("USR1"), Ok(rustix::process::Signal::USR1));
        let err = parse_signal("BOGUS").unwrap_err();
        assert!(
            err.contains("unknown signal") && err.contains("HUP"),
            "{err}"
        );
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("-1").is_err());
    }
}
