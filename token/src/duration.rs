//! Durations as operators write them: `90s`, `10m`, `1h`, `30d`.

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not `<digits><s|m|h|d>`.
    #[error("invalid duration {0:?}: use a whole number and a unit, like 90s, 10m, 1h or 30d")]
    Syntax(String),
    /// Too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a duration into seconds.
pub fn parse_secs(s: &str) -> Result<u64, DurationError> {
    let syntax = || DurationError::Syntax(s.to_owned());
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(syntax)?;
    let (num, unit) = s.split_at(unit_at);
    if num.is_empty() {
        return Err(syntax());
    }
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(syntax()),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| DurationError::Overflow(s.to_owned()))
}

/// Formats seconds the short way back (`3600` → `1h`, `90` → `90s`).
pub fn format_secs(secs: u64) -> String {
    for (unit, mult) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= mult && secs.is_multiple_of(mult) {
            return format!("{}{unit}", secs / mult);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("10m"), Ok(600));
        assert_eq!(parse_secs("1h"), Ok(3600));
        assert_eq!(parse_secs("30d"), Ok(2_592_000));
        for bad in ["", "h", "10", "1.5h", "-1h", "1H", "1 h", "1hh", "١h"] {
            assert!(
                matches!(parse_secs(bad), Err(DurationError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_secs("99999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
        assert_eq!(format_secs(3600), "1h");
        assert_eq!(format_secs(90), "90s");
    }
}
