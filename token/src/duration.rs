//! Durations as operators write them: `90s`, `10m`, `1h`, `30d`, and sums of
//! them from the largest unit down: `1h30m`, `2d12h`.
//!
//! Hand-written rather than `humantime`: that crate also takes months and
//! years (of 30.44 and 365.25 days), fractions of a second and spaces, none of
//! which a credential lifetime needs, and each of which is one more way for a
//! config to mean something other than it says. Four units and one order are
//! the whole grammar here, and the `duration` fuzz target covers it.

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not `<digits><unit>` parts, units `d`, `h`, `m`, `s` from the largest down.
    #[error("invalid duration {0:?}: use whole numbers with units from the largest down, like 90s, 10m, 1h30m or 30d")]
    Syntax(String),
    /// Too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a duration into seconds: one or more `<digits><unit>` parts, units
/// `d`, `h`, `m`, `s`, each at most once and from the largest down.
pub fn parse_secs(s: &str) -> Result<u64, DurationError> {
    let syntax = || DurationError::Syntax(s.to_owned());
    let overflow = || DurationError::Overflow(s.to_owned());
    if s.is_empty() {
        return Err(syntax());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    // The multiplier of the last unit seen: the next must be smaller.
    let mut last = u64::MAX;
    while !rest.is_empty() {
        let unit_at = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(syntax)?;
        let (num, tail) = rest.split_at(unit_at);
        let unit = tail.chars().next().ok_or_else(syntax)?;
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(syntax()),
        };
        if num.is_empty() || mult >= last {
            return Err(syntax());
        }
        last = mult;
        let n = num.parse::<u64>().map_err(|_| overflow())?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(overflow)?;
        rest = &tail[unit.len_utf8()..];
    }
    Ok(total)
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
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        assert_eq!(parse_secs("2d12h"), Ok(216_000));
        assert_eq!(parse_secs("1d2h3m4s"), Ok(93_784));
        assert_eq!(parse_secs("0h90s"), Ok(90));
        for bad in [
            "", "h", "10", "1.5h", "-1h", "1H", "1 h", "1hh", "١h", "30m1h", "1h1h", "1h30",
            "1h 30m", "h30m", "1h-30m", "1hm",
        ] {
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
