//! `lanyard issuer`, and the operator commands that talk to its admin socket:
//! `join-token`, `node`, `entry`, `agent list|suspend|resume|revoke`, and the
//! online forms of `token revoke` and `org revoke-chain`.

use std::path::{Path, PathBuf};
#[cfg(feature = "issuer")]
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use lanyard_proto::issuer as pb;
use lanyard_proto::issuer::admin_client::AdminClient;
use lanyard_token::duration;

use crate::daemon::runtime;
#[cfg(feature = "issuer")]
use crate::daemon::{init_logging, EXIT_CONFIG};

/// Default admin socket (the issuer config's `admin_socket`).
const DEFAULT_ADMIN_SOCKET: &str = "/run/lanyard/admin.sock";

#[derive(Debug, Args)]
pub struct Socket {
    /// The issuer's admin socket.
    #[arg(long, default_value = DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Create a single-use join token and print it.
    Create {
        #[command(flatten)]
        socket: Socket,
        /// How long it may wait to be used.
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// The node's name (selector join:name:NAME); default: derived from the token.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Make a device key on the device: DIR/device.seed (0600, for the agent's
    /// `[upstream] device_seed`) and DIR/device.public (for `node allow`).
    Keygen {
        /// Where to write the two files; an existing seed is never replaced.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Pin a device's ed25519 public key (device key node attestation).
    Allow {
        #[command(flatten)]
        socket: Socket,
        /// 64 hex characters, or a path to a .public file.
        #[arg(long)]
        public_key: String,
        /// The device name (selector device:name:NAME).
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Register an identity for workloads on the agents a node selector picks.
    Create {
        #[command(flatten)]
        socket: Socket,
        /// SPIFFE ID or urn: name.
        #[arg(long)]
        subject: String,
        /// Workload selectors (all must match), e.g. unix:uid:1000.
        #[arg(long = "selector", required = true)]
        selectors: Vec<String>,
        /// Node selectors (all must match the agent), e.g. join:name:gw1.
        #[arg(long = "node-selector", required = true)]
        node_selectors: Vec<String>,
        /// Credential lifetime.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Default audiences of the seed + JWT credential.
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Networks.
        #[arg(long = "network")]
        networks: Vec<String>,
    },
    /// List entries.
    List {
        #[command(flatten)]
        socket: Socket,
        /// JSON, one array.
        #[arg(long)]
        json: bool,
    },
    /// Delete an entry.
    Delete {
        #[command(flatten)]
        socket: Socket,
        /// The entry id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List attested agents.
    List {
        #[command(flatten)]
        socket: Socket,
        /// JSON, one array.
        #[arg(long)]
        json: bool,
    },
    /// Refuse an agent until resumed.
    Suspend {
        #[command(flatten)]
        socket: Socket,
        /// The agent id.
        id: String,
    },
    /// Undo a suspension.
    Resume {
        #[command(flatten)]
        socket: Socket,
        /// The agent id.
        id: String,
    },
    /// Refuse an agent forever and deny its credential.
    Revoke {
        #[command(flatten)]
        socket: Socket,
        /// The agent id.
        id: String,
    },
}

async fn client(socket: &Path) -> Result<AdminClient<tonic::transport::Channel>> {
    let ch = lanyard_agent::client::connect(socket)
        .await
        .with_context(|| format!("cannot reach the issuer admin socket {}", socket.display()))?;
    Ok(AdminClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
}

fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("issuer: {}", s.message())
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(f)
}

fn secs(what: &str, v: &str) -> Result<i64> {
    let s = duration::parse_secs(v).with_context(|| format!("--{what} {v:?}"))?;
    i64::try_from(s).context("duration too large")
}

/// Runs the issuer until SIGTERM.
#[cfg(feature = "issuer")]
pub fn issuer(config: &Path) -> Result<ExitCode> {
    init_logging();
    let config = match lanyard_issuer::config::IssuerConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanyard: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    runtime()?.block_on(async move {
        let bound = match lanyard_issuer::app::build(config).await {
            Ok(b) => b,
            Err(lanyard_issuer::app::BuildError::Authority(e)) => {
                eprintln!("lanyard: config key `authority`: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            Err(e @ lanyard_issuer::app::BuildError::NotAnIssuerChain(_)) => {
                eprintln!("lanyard: config key `authority`: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            // As for the agent: the key, and the OS error once.
            Err(e @ lanyard_issuer::app::BuildError::Bind { .. }) => {
                eprintln!("lanyard: config key {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        bound.wait_termination().await?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn join_token(c: JoinTokenCommand) -> Result<()> {
    let JoinTokenCommand::Create { socket, ttl, name } = c;
    block_on(async move {
        let r = client(&socket.admin_socket)
            .await?
            .create_join_token(pb::CreateJoinTokenRequest {
                ttl_secs: secs("ttl", &ttl)?,
                name: name.unwrap_or_default(),
            })
            .await
            .map_err(status)?
            .into_inner();
        eprintln!(
            "join token for node {} (selector join:name:{}), single use, expires at {}",
            r.name,
            r.name,
            crate::clock::rfc3339(u64::try_from(r.expires_at).unwrap_or(0))
        );
        println!("{}", r.token);
        Ok(())
    })
}

pub fn node(c: NodeCommand) -> Result<()> {
    let (socket, public_key, name) = match c {
        NodeCommand::Keygen { out } => {
            let key = lanyard_token::KeyPair::generate()?;
            let (seed, public) = crate::files::write_key_pair(&out, "device", &key)?;
            println!("device key {}", key.public());
            println!(
                "wrote {} (keep it on this device: [upstream] device_seed) and {} (for `lanyard node allow --public-key`)",
                seed.display(),
                public.display()
            );
            return Ok(());
        }
        NodeCommand::Allow {
            socket,
            public_key,
            name,
        } => (socket, public_key, name),
    };
    let key = if Path::new(&public_key).is_file() {
        std::fs::read_to_string(&public_key)?.trim().to_owned()
    } else {
        public_key
    };
    block_on(async move {
        client(&socket.admin_socket)
            .await?
            .allow_node(pb::AllowNodeRequest {
                name: name.clone(),
                public_key: key,
            })
            .await
            .map_err(status)?;
        eprintln!("device {name} allowed (selector device:name:{name})");
        Ok(())
    })
}

fn entry_json(e: &pb::Entry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "subject": e.subject, "selectors": e.selectors,
        "node_selectors": e.node_selectors, "ttl_secs": e.ttl_secs,
        "audiences": e.audiences, "networks": e.networks, "revision": e.revision,
    })
}

pub fn entry(c: EntryCommand) -> Result<()> {
    block_on(async move {
        match c {
            EntryCommand::Create {
                socket,
                subject,
                selectors,
                node_selectors,
                ttl,
                audiences,
                networks,
            } => {
                let e = client(&socket.admin_socket)
                    .await?
                    .create_entry(pb::Entry {
                        subject,
                        selectors,
                        node_selectors,
                        ttl_secs: secs("ttl", &ttl)?,
                        audiences,
                        networks,
                        ..pb::Entry::default()
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                println!("{}", e.id);
            }
            EntryCommand::List { socket, json } => {
                let r = client(&socket.admin_socket)
                    .await?
                    .list_entries(pb::ListEntriesRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                if json {
                    let v: Vec<_> = r.entries.iter().map(entry_json).collect();
                    println!("{}", serde_json::Value::Array(v));
                } else {
                    for e in r.entries {
                        println!(
                            "{}  {}  selectors={}  node={}  ttl={}",
                            e.id,
                            e.subject,
                            e.selectors.join(","),
                            e.node_selectors.join(","),
                            duration::format_secs(u64::try_from(e.ttl_secs).unwrap_or(0))
                        );
                    }
                }
            }
            EntryCommand::Delete { socket, id } => {
                client(&socket.admin_socket)
                    .await?
                    .delete_entry(pb::DeleteEntryRequest { id })
                    .await
                    .map_err(status)?;
            }
        }
        Ok(())
    })
}

pub fn agents(c: AgentCommand) -> Result<()> {
    block_on(async move {
        let (socket, id, status_name) = match c {
            AgentCommand::List { socket, json } => {
                let r = client(&socket.admin_socket)
                    .await?
                    .list_agents(pb::ListAgentsRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                if json {
                    let v: Vec<_> = r
                        .agents
                        .iter()
                        .map(|a| {
                            serde_json::json!({"id": a.id, "selectors": a.selectors,
                                "status": a.status, "attested_at": a.attested_at,
                                "credential_jti": a.credential_jti,
                                "credential_expires_at": a.credential_expires_at})
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                } else {
                    for a in r.agents {
                        println!("{}  {}  {}", a.id, a.status, a.selectors.join(","));
                    }
                }
                return Ok(());
            }
            AgentCommand::Suspend { socket, id } => (socket, id, "suspended"),
            AgentCommand::Resume { socket, id } => (socket, id, "active"),
            AgentCommand::Revoke { socket, id } => (socket, id, "revoked"),
        };
        client(&socket.admin_socket)
            .await?
            .set_agent_status(pb::SetAgentStatusRequest {
                id: id.clone(),
                status: status_name.into(),
            })
            .await
            .map_err(status)?;
        eprintln!("agent {id}: {status_name}");
        Ok(())
    })
}

/// `token revoke --jti J --admin-socket S` and `org revoke-chain --id C --admin-socket S`.
pub fn revoke(socket: &Path, what: pb::revoke_request::What) -> Result<()> {
    block_on(async move {
        let r = client(socket)
            .await?
            .revoke(pb::RevokeRequest { what: Some(what) })
            .await
            .map_err(status)?
            .into_inner();
        eprintln!(
            "revoked at revision {}; agents receive the deny list within seconds",
            r.revision
        );
        Ok(())
    })
}

/// Refuses a command that has neither the org seed nor an admin socket.
pub fn need_one(offline: bool, online: bool) -> Result<()> {
    match (offline, online) {
        (true, false) | (false, true) => Ok(()),
        (true, true) => bail!("give either --org-seed/--deny-list or --admin-socket, not both"),
        (false, false) => bail!(
            "give --admin-socket (revoke at the issuer) or --org-seed and --deny-list (offline list)"
        ),
    }
}
