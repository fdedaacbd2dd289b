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
    /// Send this signal to the process in --pid-file after each update (e.g. HUP).
    #[arg(long, requires = "pid_file")]
    pub signal: Option<String>,
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

fn notify(a: &FetchArgs, child: &mut Option<std::process::Child>) -> Result<()> {
    if let (Some(sig), Some(pid_file)) = (&a.signal, &a.pid_file) {
        let pid = std::fs::read_to_string(pid_file)?.trim().to_owned();
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()?;
        if !status.success() {
            bail!("could not signal pid {pid} with {sig}");
        }
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
