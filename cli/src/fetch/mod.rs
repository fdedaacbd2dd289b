//! `lanyard fetch`: the sidecar. Fetches the caller's credentials from the agent
//! socket and writes them as files, each replaced atomically.
//!
//! With `--watch` it follows the agent's streams (`FetchCredentials` and
//! `FetchX509SVID`), so a rotation is on disk as soon as the agent has it, and
//! refreshes JWT-SVIDs at half their lifetime. When the agent goes away (a
//! restart, an upgrade) it keeps the files and the child as they are and
//! reconnects with backoff. It signals or restarts its child only once every
//! file is written, and stops the child (SIGTERM, then SIGKILL after `--grace`)
//! when it is stopped itself.

mod child;
mod files;
mod pidfile;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lanyard_agent::client::{connect, with_header};
use lanyard_proto::spiffe::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use lanyard_proto::spiffe::{JwtsvidRequest, X509svidRequest, X509svidResponse};
use lanyard_proto::workload::credentials_client::CredentialsClient;
use lanyard_proto::workload::{Credential, FetchCredentialsRequest};
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::Channel;

use child::Child;
use files::{Files, JwtSvid};

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The agent's Workload API socket: a path or a `unix://` address
    /// (default: $SPIFFE_ENDPOINT_SOCKET).
    #[arg(long)]
    pub socket: Option<String>,
    /// Where to write the files.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Audiences for the JWT-SVIDs and the seed + JWT credential (repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Keep the files fresh: follow the agent and rewrite them whenever it
    /// rotates; reconnect when it restarts.
    #[arg(long)]
    pub watch: bool,
    /// Send this signal to the process in --pid-file after each update (HUP,
    /// SIGHUP, TERM, INT, QUIT, USR1, USR2, WINCH, CONT).
    #[arg(long)]
    pub signal: Option<String>,
    /// The process to signal.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// How long the --exec child has to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_grace)]
    pub grace: Duration,
    /// Run this command once the files exist, and restart it after each update.
    /// Without --watch, wait for it and exit with its status.
    #[arg(long, num_args = 1.., allow_hyphen_values = true, conflicts_with = "signal")]
    pub exec: Vec<String>,
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    crate::org::parse_duration(text).map(Duration::from_secs)
}

/// The agent socket from `--socket` or `$SPIFFE_ENDPOINT_SOCKET`: a path, or a
/// `unix://` address as SPIFFE clients write them (`unix:///run/x.sock`).
fn socket_path(arg: Option<&str>, env: Option<String>) -> Result<PathBuf> {
    let (raw, from) = match (arg, env) {
        (Some(a), _) => (a.to_owned(), "--socket"),
        (None, Some(e)) if !e.is_empty() => (e, "SPIFFE_ENDPOINT_SOCKET"),
        _ => bail!("no agent socket: give --socket PATH or set SPIFFE_ENDPOINT_SOCKET"),
    };
    let path = if let Some(rest) = raw.strip_prefix("unix://") {
        if !rest.starts_with('/') {
            bail!("{from} {raw:?}: a unix:// address needs an absolute path (unix:///run/lanyard/agent.sock)");
        }
        rest
    } else if let Some(rest) = raw.strip_prefix("unix:") {
        rest
    } else if raw.contains("://") {
        bail!("{from} {raw:?}: the agent listens on a Unix socket; give its path or a unix:// address");
    } else {
        raw.as_str()
    };
    if path.is_empty() {
        bail!("{from} {raw:?}: no socket path");
    }
    Ok(PathBuf::from(path))
}

/// What `--signal` and `--pid-file` ask for, checked before anything runs:
/// each mistake is one line.
fn signal_target(a: &FetchArgs) -> Result<Option<(rustix::process::Signal, PathBuf)>> {
    match (&a.signal, &a.pid_file) {
        (None, None) => Ok(None),
        (Some(s), Some(f)) => {
            let sig = pidfile::parse_signal(s).map_err(|e| anyhow::anyhow!("--signal: {e}"))?;
            // A bad pid file is an error now, not after the first fetch.
            pidfile::read_pid_file(f)?;
            Ok(Some((sig, f.clone())))
        }
        (Some(s), None) => bail!("--signal {s} needs --pid-file FILE: the process to signal"),
        (None, Some(f)) => bail!(
            "--pid-file {} needs --signal SIG: what to send it",
            f.display()
        ),
    }
}

/// An empty or repeated `--audience` would fail every session the same way
/// (the agent refuses an empty one; a repeat names the same files twice), so
/// `--watch` would retry forever. Say so once, before anything runs.
fn check_audiences(audiences: &[String]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for aud in audiences {
        if aud.trim().is_empty() {
            bail!("--audience: an audience cannot be empty");
        }
        if !seen.insert(aud.as_str()) {
            bail!("--audience {aud:?} is given twice");
        }
    }
    Ok(())
}

/// The caller's identities as the agent last sent them.
#[derive(Debug, Default)]
struct Latest {
    creds: Vec<Credential>,
    x509: Option<X509svidResponse>,
}

/// The JWT-SVIDs for every SPIFFE ID and audience, and when to fetch them
/// again (half of the shortest lifetime left).
async fn jwt_svids(
    ch: &Channel,
    latest: &Latest,
    audiences: &[String],
) -> Result<(Vec<JwtSvid>, Option<Duration>)> {
    let mut out = Vec::new();
    let mut refresh: Option<Duration> = None;
    let now = lanyard_agent::api::now();
    let ids = latest
        .x509
        .as_ref()
        .map(|x| x.svids.as_slice())
        .unwrap_or_default();
    let mut spiffe = SpiffeWorkloadApiClient::new(ch.clone());
    for (identity, svid) in ids.iter().enumerate() {
        for aud in audiences {
            let r = spiffe
                .fetch_jwtsvid(with_header(JwtsvidRequest {
                    audience: vec![aud.clone()],
                    spiffe_id: svid.spiffe_id.clone(),
                }))
                .await;
            // Not entitled to this one: no file. Any other error fails the
            // session (the files stay as they are) rather than dropping a
            // token a server may be using.
            let svids = match r {
                Ok(r) => r.into_inner().svids,
                Err(s) if s.code() == tonic::Code::PermissionDenied => continue,
                Err(s) => bail!("JWT-SVID for {aud:?}: {:?}: {}", s.code(), s.message()),
            };
            let Some(s) = svids.into_iter().next() else {
                continue;
            };
            if let Some(exp) = jwt_exp(&s.svid) {
                let half =
                    Duration::from_secs(exp.saturating_sub(now) / 2).max(Duration::from_secs(1));
                refresh = Some(refresh.map_or(half, |r| r.min(half)));
            }
            out.push(JwtSvid {
                identity,
                spiffe_id: svid.spiffe_id.clone(),
                audience: aud.clone(),
                token: s.svid,
            });
        }
    }
    Ok((out, refresh))
}

/// The `exp` of a JWT, read without verifying (the agent just signed it; this
/// only decides when to ask for a new one).
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["exp"].as_u64()
}

/// Writes the files if they differ from the last set, then tells the server.
async fn update(
    a: &FetchArgs,
    files: Files,
    last: &mut Option<Files>,
    target: Option<&(rustix::process::Signal, PathBuf)>,
    child: &mut Child,
) -> Result<()> {
    if last.as_ref() == Some(&files) {
        return Ok(());
    }
    files::write(&a.out_dir, &files)?;
    // Progress goes to stderr, and a failed write of it is ignored: the
    // sidecar must not stop between writing the files and telling the server.
    let _ = writeln!(
        std::io::stderr(),
        "lanyard fetch: wrote {} files to {}",
        files.0.len(),
        a.out_dir.display()
    );
    if let Some((sig, pid_file)) = target {
        // Read again each time: the server may have restarted with a new pid.
        // A pid file that may not name its process, or names none, is an
        // error: one-shot it is the exit status; watching, the update is
        // retried after a backoff (the files are already written).
        pidfile::signal_pid_file(pid_file, *sig)?;
    }
    child.restart().await?;
    *last = Some(files);
    Ok(())
}

/// One connection to the agent: the first complete set of files, then every
/// change until the agent goes away (an error) or the child exits (`Some`).
async fn follow(
    a: &FetchArgs,
    socket: &std::path::Path,
    last: &mut Option<Files>,
    target: Option<&(rustix::process::Signal, PathBuf)>,
    child: &mut Child,
    connected: &mut Option<std::time::Instant>,
) -> Result<Option<std::process::ExitStatus>> {
    let ch = connect(socket)
        .await
        .with_context(|| format!("cannot connect to the agent at {}", socket.display()))?;
    let req = FetchCredentialsRequest {
        audiences: a.audiences.clone(),
    };
    let mut creds = CredentialsClient::new(ch.clone())
        .fetch_credentials(with_header(req))
        .await
        .map_err(|s| anyhow::anyhow!("agent refused credentials: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    // SPIFFE SVIDs exist only for spiffe:// identities; a caller with urn: names
    // alone has none, and the agent refuses the stream.
    // Only PermissionDenied means "no SPIFFE identity"; any other error
    // (the agent cannot mint now, too many streams) fails this session, which
    // keeps the files as they are and tries again.
    let mut x509 = match SpiffeWorkloadApiClient::new(ch.clone())
        .fetch_x509svid(with_header(X509svidRequest {}))
        .await
    {
        Ok(r) => Some(r.into_inner()),
        Err(s) if s.code() == tonic::Code::PermissionDenied => None,
        Err(s) => bail!("X.509-SVID stream: {:?}: {}", s.code(), s.message()),
    };
    let mut latest = Latest::default();
    let first = creds
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .context("agent closed the stream")?;
    if first.credentials.is_empty() {
        bail!("no credential issued");
    }
    latest.creds = first.credentials;
    if let Some(s) = x509.as_mut() {
        match s.message().await {
            Ok(Some(r)) => latest.x509 = Some(r),
            Err(s) if s.code() == tonic::Code::PermissionDenied => x509 = None,
            Ok(None) => bail!("the agent closed the X.509-SVID stream"),
            Err(s) => bail!("X.509-SVID stream: {:?}: {}", s.code(), s.message()),
        }
    }
    *connected = Some(std::time::Instant::now());
    loop {
        let (jwts, refresh) = jwt_svids(&ch, &latest, &a.audiences).await?;
        let files = files::build(&latest.creds, latest.x509.as_ref(), &jwts)?;
        update(a, files, last, target, child).await?;
        if !a.watch {
            return Ok(None);
        }
        let wait = refresh.unwrap_or(Duration::from_secs(86_400 * 365));
        tokio::select! {
            m = creds.message() => match m {
                Ok(Some(r)) if !r.credentials.is_empty() => latest.creds = r.credentials,
                Ok(Some(_)) => bail!("the agent no longer issues any credential to this caller"),
                Ok(None) => bail!("the agent closed the credentials stream"),
                Err(s) => bail!("credentials stream: {:?}: {}", s.code(), s.message()),
            },
            m = async { x509.as_mut()?.message().await.ok() }, if x509.is_some() => match m {
                Some(Some(r)) => latest.x509 = Some(r),
                _ => bail!("the agent closed the X.509-SVID stream"),
            },
            () = tokio::time::sleep(wait) => {}
            status = child.exited() => return Ok(Some(status)),
        }
    }
}

/// How long a session must have lasted for its failure to start the backoff
/// over (an agent restart after hours of service reconnects at once).
const HEALTHY: Duration = Duration::from_secs(30);

/// Exponential backoff between reconnects: 100 ms doubling to 10 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7))).min(Duration::from_secs(10))
}

pub fn run(a: &FetchArgs) -> Result<ExitCode> {
    let socket = socket_path(
        a.socket.as_deref(),
        std::env::var("SPIFFE_ENDPOINT_SOCKET").ok(),
    )?;
    check_audiences(&a.audiences)?;
    let target = signal_target(a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut child = Child::new(a.exec.clone(), a.grace);
        let mut last = None;
        let mut attempt = 0u32;
        let code = loop {
            let mut connected = None;
            let outcome = tokio::select! {
                r = follow(a, &socket, &mut last, target.as_ref(), &mut child, &mut connected) => Some(r),
                _ = term.recv() => None,
                _ = int.recv() => None,
            };
            let Some(result) = outcome else {
                break ExitCode::SUCCESS;
            };
            match result {
                Ok(Some(status)) => {
                    eprintln!("lanyard fetch: the child exited ({status}); exiting with it");
                    break exit_code(status);
                }
                // One-shot, and the files are written.
                Ok(None) if child.wanted() => {
                    // Like `exec`: the child's status is ours.
                    let status = tokio::select! {
                        s = child.exited() => s,
                        _ = term.recv() => { child.stop().await; break ExitCode::SUCCESS; }
                        _ = int.recv() => { child.stop().await; break ExitCode::SUCCESS; }
                    };
                    break exit_code(status);
                }
                Ok(None) => break ExitCode::SUCCESS,
                // Not watching: a plain error. (Watching, even a first failure
                // is retried: in a pod the sidecar often starts before the agent.)
                Err(e) if !a.watch => {
                    child.stop().await;
                    return Err(e);
                }
                Err(e) => {
                    // Back to quick retries only after a session that stayed
                    // up: one that fails at once (a file it cannot write, a
                    // child that cannot start) must not reconnect, attest and
                    // mint ten times a second.
                    if connected.is_some_and(|t: std::time::Instant| t.elapsed() >= HEALTHY) {
                        attempt = 0;
                    }
                    let pause = backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    eprintln!("lanyard fetch: {e:#}; reconnecting in {pause:?}");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = term.recv() => break ExitCode::SUCCESS,
                        _ = int.recv() => break ExitCode::SUCCESS,
                        status = child.exited() => break exit_code(status),
                    }
                }
            }
        };
        child.stop().await;
        Ok(code)
    })
}

/// The exit code for a child's status: its code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_by_path_or_unix_address() {
        let p = |a: Option<&str>, e: Option<&str>| socket_path(a, e.map(str::to_owned));
        assert_eq!(
            p(Some("/run/a.sock"), None).unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            p(Some("unix:///run/a.sock"), None).unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            p(Some("unix:/run/a.sock"), None).unwrap(),
            PathBuf::from("/run/a.sock")
        );
        assert_eq!(
            p(None, Some("unix:///run/b.sock")).unwrap(),
            PathBuf::from("/run/b.sock")
        );
        assert_eq!(
            p(Some("rel.sock"), Some("unix:///x")).unwrap(),
            PathBuf::from("rel.sock")
        );
        for bad in ["unix://host/run/a.sock", "tcp://127.0.0.1:1", "unix://", ""] {
            assert!(p(Some(bad), None).is_err(), "{bad}");
        }
        let none = p(None, None).unwrap_err().to_string();
        assert!(none.contains("SPIFFE_ENDPOINT_SOCKET"), "{none}");
    }

    #[test]
    fn empty_or_repeated_audiences_are_refused_up_front() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(check_audiences(&v(&[])).is_ok());
        assert!(check_audiences(&v(&["a", "b"])).is_ok());
        let dup = check_audiences(&v(&["a", "b", "a"]))
            .unwrap_err()
            .to_string();
        assert!(dup.contains("\"a\" is given twice"), "{dup}");
        assert!(check_audiences(&v(&["a", " "])).is_err());
        assert!(check_audiences(&v(&[""])).is_err());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }

    #[test]
    fn jwt_expiry_is_read_from_the_payload() {
        use base64::Engine as _;
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1234}"#);
        assert_eq!(jwt_exp(&format!("h.{p}.s")), Some(1234));
        assert_eq!(jwt_exp("garbage"), None);
    }
}
