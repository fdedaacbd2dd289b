//! KSUIDs, the `jti` of every chained token: 20 bytes (4 bytes of big-endian seconds
//! since 1400000000, 16 random) written as 27 base62 characters.

use crate::keys::{random_bytes, KeyError};

/// The KSUID epoch, in Unix seconds.
pub const EPOCH: u64 = 1_400_000_000;
/// Length of the text form.
pub const TEXT_LEN: usize = 27;
const BYTE_LEN: usize = 20;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a KSUID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KsuidError {
    /// The text is not 27 characters long.
    #[error("KSUID must be {TEXT_LEN} characters, got {0}")]
    WrongLength(usize),
    /// A character is outside the base62 alphabet.
    #[error("KSUID has a non-base62 character at offset {0}")]
    InvalidChar(usize),
    /// The value does not fit in 20 bytes.
    #[error("KSUID value out of range")]
    Overflow,
    /// The time is before the KSUID epoch or after its 32-bit range.
    #[error("time {0} cannot be expressed in a KSUID")]
    TimeOutOfRange(u64),
}

/// A parsed KSUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ksuid([u8; BYTE_LEN]);

impl Ksuid {
    /// A new KSUID for `unix_secs`, with 16 bytes from the OS random source.
    pub fn generate(unix_secs: u64) -> Result<Self, GenerateError> {
        let mut payload = [0u8; 16];
        random_bytes(&mut payload)?;
        Ok(Self::from_parts(unix_secs, payload)?)
    }

    /// A KSUID from its time and payload.
    pub fn from_parts(unix_secs: u64, payload: [u8; 16]) -> Result<Self, KsuidError> {
        let ts = unix_secs
            .checked_sub(EPOCH)
            .and_then(|d| u32::try_from(d).ok())
            .ok_or(KsuidError::TimeOutOfRange(unix_secs))?;
        let mut b = [0u8; BYTE_LEN];
        b[..4].copy_from_slice(&ts.to_be_bytes());
        b[4..].copy_from_slice(&payload);
        Ok(Self(b))
    }

    /// Parses the 27 character text form.
    pub fn parse(text: &str) -> Result<Self, KsuidError> {
        let raw = text.as_bytes();
        if raw.len() != TEXT_LEN {
            return Err(KsuidError::WrongLength(raw.len()));
        }
        // Five big-endian u32 limbs; multiply by 62 and add each digit.
        let mut limbs = [0u32; 5];
        for (i, &c) in raw.iter().enumerate() {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == c)
                .ok_or(KsuidError::InvalidChar(i))? as u64;
            let mut carry = digit;
            for limb in limbs.iter_mut().rev() {
                let v = u64::from(*limb) * 62 + carry;
                *limb = v as u32;
                carry = v >> 32;
            }
            if carry != 0 {
                return Err(KsuidError::Overflow);
            }
        }
        let mut b = [0u8; BYTE_LEN];
        for (chunk, limb) in b.chunks_exact_mut(4).zip(limbs) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        Ok(Self(b))
    }

    /// Unix seconds encoded in the KSUID.
    pub fn unix_secs(&self) -> u64 {
        let ts = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]);
        EPOCH + u64::from(ts)
    }

    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; BYTE_LEN] {
        &self.0
    }
}

impl std::fmt::Display for Ksuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut limbs: [u32; 5] = [0; 5];
        for (limb, chunk) in limbs.iter_mut().zip(self.0.chunks_exact(4)) {
            *limb = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        let mut out = [b'0'; TEXT_LEN];
        for slot in out.iter_mut().rev() {
            // Long division of the 160-bit number by 62.
            let mut rem = 0u64;
            for limb in limbs.iter_mut() {
                let v = (rem << 32) | u64::from(*limb);
                *limb = (v / 62) as u32;
                rem = v % 62;
            }
            *slot = ALPHABET[rem as usize];
        }
        // The alphabet is ASCII, so this cannot fail; fall back to an error rather than panic.
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// Why a KSUID could not be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// The random source failed.
    #[error(transparent)]
    Rng(#[from] KeyError),
    /// The time is outside the KSUID range.
    #[error(transparent)]
    Ksuid(#[from] KsuidError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choria_vector_time() {
        // jti and iat of ../shared/interop/choria/chain/chain_issuer.jwt
        let k = Ksuid::parse("3MVUmuoA6KiC9vfUlPWtgWZksOh").unwrap();
        assert_eq!(k.unix_secs(), 1_795_435_390);
        assert_eq!(k.to_string(), "3MVUmuoA6KiC9vfUlPWtgWZksOh");
    }

    #[test]
    fn bounds() {
        assert_eq!(
            Ksuid::parse("000000000000000000000000000")
                .unwrap()
                .as_bytes(),
            &[0; 20]
        );
        let max = Ksuid::parse("aWgEPTl1tmebfsQzFP4bxwgy80V").unwrap();
        assert_eq!(max.as_bytes(), &[0xff; 20]);
        assert_eq!(
            Ksuid::parse("aWgEPTl1tmebfsQzFP4bxwgy80W"),
            Err(KsuidError::Overflow)
        );
        assert_eq!(
            Ksuid::parse("zzzzzzzzzzzzzzzzzzzzzzzzzzz"),
            Err(KsuidError::Overflow)
        );
        assert_eq!(
            Ksuid::parse("3MVUmuoA6KiC9vfUlPWtgWZksO"),
            Err(KsuidError::WrongLength(26))
        );
        assert_eq!(
            Ksuid::parse("3MVUmuoA6KiC9vfUlPWtgWZks-h"),
            Err(KsuidError::InvalidChar(25))
        );
        assert!(Ksuid::from_parts(EPOCH - 1, [0; 16]).is_err());
        assert!(Ksuid::from_parts(EPOCH + u64::from(u32::MAX) + 1, [0; 16]).is_err());
    }

    #[test]
    fn generate_round_trip() {
        let k = Ksuid::generate(1_800_000_000).unwrap();
        assert_eq!(k.unix_secs(), 1_800_000_000);
        assert_eq!(Ksuid::parse(&k.to_string()).unwrap(), k);
    }
}
