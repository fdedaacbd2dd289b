//! What every daemon command (`agent`, `issuer`, `dev`) shares: logging, the
//! async runtime, the exit code for a bad config. A leaf module, so the
//! commands import it and not each other.

use anyhow::{Context as _, Result};

/// sysexits' EX_CONFIG: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 64;

/// Logs to stderr for the daemons (`agent`, `issuer`, `dev`). `LANYARD_LOG`
/// filters (`info` by default; `lanyard_agent=debug,info`), and
/// `LANYARD_LOG_FORMAT=json` writes one JSON object per event for a log
/// collector. Colour codes only when stderr is a terminal: a journal or a
/// container log gets plain text.
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match std::env::var("LANYARD_LOG_FORMAT").as_deref() {
        Ok("json") => fmt.json().try_init(),
        Ok("text") | Err(_) => fmt.try_init(),
        Ok(other) => {
            eprintln!("lanyard: LANYARD_LOG_FORMAT={other:?} is neither \"text\" nor \"json\"; logging text");
            fmt.try_init()
        }
    };
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
