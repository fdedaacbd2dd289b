//! `lanyard agent` and `lanyard dev`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use lanyard_agent::app;
use lanyard_agent::config::Config;

use crate::org::{self, DelegateArgs, InitArgs};

use crate::daemon::{init_logging, runtime, EXIT_CONFIG};

/// Runs an agent from a config file until SIGTERM.
pub fn agent(config: &Path) -> Result<ExitCode> {
    init_logging();
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanyard: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    run(config, |_| {})
}

fn run(config: Config, on_ready: impl FnOnce(&app::Bound)) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let bound = match app::build(config).await {
            Ok(b) => b,
            Err(app::BuildError::Authority(e)) => {
                eprintln!("lanyard: config key `authority`: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            Err(app::BuildError::Attestor(e)) => {
                eprintln!("lanyard: config key `plugins`: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            // What the config names cannot be bound or is not private: the
            // operator's to fix, like any other config error. The message
            // names the key and carries the OS error once (anyhow's chain
            // would print the source a second time).
            Err(e @ (app::BuildError::Bind { .. } | app::BuildError::UnsafeDir { .. })) => {
                eprintln!("lanyard: config key {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        };
        on_ready(&bound);
        bound.wait_termination().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A complete local deployment: org, chain issuer, and an agent that gives the
/// invoking user an identity. Runs until Ctrl-C, then cleans up.
pub fn dev(dir: Option<PathBuf>) -> Result<ExitCode> {
    init_logging();
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("lanyard-dev-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let uid = lanyard_agent::peer::current_uid();
    let result = (|| {
        if !dir.join("org/org.seed").exists() {
            org::init(&InitArgs {
                out: dir.join("org"),
            })?;
            org::delegate_cmd(&DelegateArgs {
                org_seed: dir.join("org/org.seed"),
                out: dir.join("chain"),
                validity: 30 * 86_400,
                name: "lanyard-dev".into(),
                subject_prefixes: vec![],
                networks: vec![],
                purposes: vec![],
                roles: vec![],
                no_x509_name_constraints: false,
            })?;
        }
        let socket = dir.join("agent.sock");
        let config = format!(
            r#"# Written by `lanyard dev`.
trust_domain = "example.org"
socket_path = "agent.sock"
data_dir = "data"
health_addr = "127.0.0.1:0"
[authority]
chain_jwt = "chain/chain.jwt"
chain_seed = "chain/chain.seed"
org_public = "org/org.public"
[[entries]]
subject = "spiffe://example.org/dev/uid/{uid}"
selectors = ["unix:uid:{uid}"]
ttl = "1h"
"#
        );
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config)?;
        let config = Config::load(&config_path).map_err(anyhow::Error::new)?;
        run(config, |bound| {
            println!(
                "lanyard dev: agent running for uid {uid} as spiffe://example.org/dev/uid/{uid}"
            );
            println!("  socket:   {}", socket.display());
            if let Some(h) = bound.health_addr() {
                println!("  health:   http://{h}/readyz   metrics: http://{h}/metrics");
            }
            println!("  org key:  {}", dir.join("org/org.public").display());
            println!(
                "\n  export SPIFFE_ENDPOINT_SOCKET=unix://{}",
                socket.display()
            );
            println!("  config:   {}", config_path.display());
            // The full path of this binary: under `cargo run` no `lanyard` is
            // on PATH, and the line must work as printed.
            let me = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "lanyard".into());
            println!(
                "  {me} fetch --socket {} --out-dir {}/creds",
                socket.display(),
                dir.display()
            );
            println!(
                "\nCtrl-C stops the agent{}.",
                if temporary {
                    " and removes this directory"
                } else {
                    ""
                }
            );
        })
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}
