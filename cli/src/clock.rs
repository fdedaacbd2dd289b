//! The wall clock and human-readable times: the CLI is the one place that reads
//! the clock; the token library takes `now` as an argument.

use anyhow::{Context as _, Result};

/// Unix seconds now.
pub fn now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs())
}

/// RFC 3339 UTC, e.g. `2026-11-23T12:03:10Z` (the agent's, from `time`).
pub fn rfc3339(unix: u64) -> String {
    lanyard_agent::clock::rfc3339(unix)
}
