//! `lanyard`: one multi-call binary for operators.
//!
//! Exit codes: 0 success; 1 a token or proof is invalid (one line on stderr says
//! why); 2 the command could not run (bad arguments, unreadable files); 64 the
//! agent's configuration is invalid (the message names the key).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ends the process quietly when stdout's reader is gone
/// (`out.rs`), instead of std's panic. Defined before the modules so that it
/// shadows std's in all of them.
macro_rules! println {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

mod admin;
mod agent_cmd;
mod attest;
mod clock;
mod daemon;
mod demo;
mod fetch;
mod files;
mod org;
mod out;
mod tokens;

#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LANYARD_COMMIT"), ")"),
    about = "Workload identity without baked-in secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Org issuer: create it, delegate chain issuers.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Mint, view, verify tokens; prove possession of a seed.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Run the agent (`--config`), or manage agents at the issuer (`list`, `suspend`, …).
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        /// The agent's TOML config file: runs the Workload API on a Unix socket.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        manage: Option<admin::AgentCommand>,
    },
    /// Run the upstream issuer (config: see README).
    #[cfg(feature = "issuer")]
    Issuer {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Join tokens for node attestation (at the issuer's admin socket).
    #[command(subcommand, name = "join-token")]
    JoinToken(admin::JoinTokenCommand),
    /// Nodes pinned by device key (at the issuer's admin socket).
    #[command(subcommand)]
    Node(admin::NodeCommand),
    /// Registration entries (at the issuer's admin socket).
    #[command(subcommand)]
    Entry(admin::EntryCommand),
    /// Show the selectors the agent derives for a process, and which entries match.
    Attest(attest::AttestArgs),
    /// Sidecar: write this process's credentials from the agent socket to files.
    Fetch(fetch::FetchArgs),
    /// A complete local deployment (org, chain issuer, agent) until Ctrl-C.
    Dev {
        /// Keep everything here instead of a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Walk through org → chain issuer → workload token in a temporary directory.
    Demo {
        /// Work here instead of a new temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lanyard_agent::metrics::set_commit(env!("LANYARD_COMMIT"));
    let result = match cli.command {
        Command::Org(c) => org::run(c).map(|()| ExitCode::SUCCESS),
        Command::Token(c) => tokens::run(c),
        Command::Agent {
            config: Some(config),
            ..
        } => agent_cmd::agent(&config),
        Command::Agent {
            manage: Some(m), ..
        } => admin::agents(m).map(|()| ExitCode::SUCCESS),
        Command::Agent { .. } => Err(anyhow::anyhow!(
            "give --config FILE (run an agent) or a subcommand (list, suspend, resume, revoke)"
        )),
        #[cfg(feature = "issuer")]
        Command::Issuer { config } => admin::issuer(&config),
        Command::JoinToken(c) => admin::join_token(c).map(|()| ExitCode::SUCCESS),
        Command::Node(c) => admin::node(c).map(|()| ExitCode::SUCCESS),
        Command::Entry(c) => admin::entry(c).map(|()| ExitCode::SUCCESS),
        Command::Dev { dir } => agent_cmd::dev(dir),
        Command::Fetch(a) => fetch::run(&a),
        Command::Attest(a) => attest::run(&a),
        Command::Demo { dir } => demo::run(dir).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanyard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
