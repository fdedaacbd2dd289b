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

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_435_390), "2026-11-23T12:03:10Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(3_976_214_399), "2095-12-31T23:59:59Z");
    }
}
