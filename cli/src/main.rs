//! `lanyard`: one multi-call binary for operators.
//!
//! Exit codes: 0 success; 1 a token or proof is invalid (one line on stderr says
//! why); 2 the command could not run (bad arguments, unreadable files).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod clock;
mod demo;
mod files;
mod org;
mod tokens;

#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
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
    /// Walk through org → chain issuer → workload token in a temporary directory.
    Demo {
        /// Work here instead of a new temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Org(c) => org::run(c).map(|()| ExitCode::SUCCESS),
        Command::Token(c) => tokens::run(c),
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
