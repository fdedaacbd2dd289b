//! Hex as lanyard writes it: lowercase only.
//!
//! Choria's Go verifier accepts either case, so decoding has a `lenient` switch
//! that only the `--choria` compatibility path turns on.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Why a hex string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// The string has an odd number of characters.
    #[error("odd number of hex digits ({0})")]
    OddLength(usize),
    /// A character is not a hex digit (or is uppercase in strict mode).
    #[error("invalid hex character {found:?} at offset {offset}{}", if found.is_ascii_uppercase() { " (lanyard requires lowercase hex)" } else { "" })]
    InvalidChar {
        /// The offending character.
        found: char,
        /// Its byte offset.
        offset: usize,
    },
    /// The decoded length is not the one required.
    #[error("expected {expected} bytes of hex, got {actual}")]
    WrongLength {
        /// Bytes required.
        expected: usize,
        /// Bytes found.
        actual: usize,
    },
}

/// Lowercase hex encoding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn nibble(c: u8, lenient: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if lenient => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex; uppercase is accepted only when `lenient`.
pub fn decode(s: &str, lenient: bool) -> Result<Vec<u8>, HexError> {
    let raw = s.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return Err(HexError::OddLength(raw.len()));
    }
    let mut out = Vec::with_capacity(raw.len() / 2);
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        // Report bytes, never slice `s`: a multi-byte char must not cause a panic.
        let bad = |k: usize| HexError::InvalidChar {
            found: if pair[k].is_ascii() {
                char::from(pair[k])
            } else {
                char::REPLACEMENT_CHARACTER
            },
            offset: i * 2 + k,
        };
        let hi = nibble(pair[0], lenient).ok_or_else(|| bad(0))?;
        let lo = nibble(pair[1], lenient).ok_or_else(|| bad(1))?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

/// Decodes hex into exactly `N` bytes.
pub fn decode_array<const N: usize>(s: &str, lenient: bool) -> Result<[u8; N], HexError> {
    let v = decode(s, lenient)?;
    let actual = v.len();
    v.try_into().map_err(|_| HexError::WrongLength {
        expected: N,
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_case() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode("00abff", false).unwrap(), vec![0, 0xab, 0xff]);
        assert!(matches!(
            decode("00ABff", false),
            Err(HexError::InvalidChar {
                found: 'A',
                offset: 2
            })
        ));
        assert_eq!(decode("00ABff", true).unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(decode("abc", false), Err(HexError::OddLength(3)));
        assert!(decode("zz", true).is_err());
        assert!(decode("é0", true).is_err());
        assert_eq!(
            decode_array::<2>("abcdef", false),
            Err(HexError::WrongLength {
                expected: 2,
                actual: 3
            })
        );
    }
}
