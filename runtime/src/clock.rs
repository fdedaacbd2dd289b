//! Times as a person reads them: RFC 3339 in UTC (`2026-11-23T12:03:10Z`), in
//! logs, `/readyz` and the CLI's output. Unix seconds stay the wire format.

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `unix` seconds as RFC 3339 UTC, e.g. `2026-11-23T12:03:10Z`; a time past
/// what `time` represents (year 9999) shows as its number of seconds.
pub fn rfc3339(unix: u64) -> String {
    let Some(t) = i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    else {
        return format!("{unix} (unix seconds)");
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_435_390), "2026-11-23T12:03:10Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(3_976_214_399), "2095-12-31T23:59:59Z");
        assert_eq!(
            super::rfc3339(u64::MAX),
            "18446744073709551615 (unix seconds)"
        );
    }
}
