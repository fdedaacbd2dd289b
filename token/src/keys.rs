//! ed25519 keys and the text forms of seed and public key files.
//!
//! Both files hold exactly 64 lowercase hex characters and no newline (the Choria
//! format). Writing them, with mode 0600 for seeds, is the caller's job: this crate
//! does no I/O.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::hex::{self, HexError};

/// Length in bytes of a seed, a public key.
pub const KEY_LEN: usize = 32;
/// Length in bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is not 64 lowercase hex characters.
    #[error("invalid key text: {0}")]
    Hex(#[from] HexError),
    /// The bytes are not a valid ed25519 public key (not a curve point).
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Rng(String),
}

/// Fills `buf` from the OS random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Rng(e.to_string()))
}

/// An ed25519 key pair made from a 32 byte seed. The seed is wiped on drop.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    // Never print the seed, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key pair from the OS random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(seed.as_mut())?;
        Ok(Self::from_seed(&seed))
    }

    /// The key pair for a given seed.
    pub fn from_seed(seed: &[u8; KEY_LEN]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Reads the text of a seed file. Surrounding whitespace is forgiven (an editor's
    /// trailing newline); anything else must be 64 lowercase hex characters.
    pub fn from_seed_text(text: &str) -> Result<Self, KeyError> {
        let seed = Zeroizing::new(hex::decode_array::<KEY_LEN>(text.trim(), false)?);
        Ok(Self::from_seed(&seed))
    }

    /// The seed file text: 64 lowercase hex characters, no newline.
    pub fn seed_text(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.signing.as_bytes()))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(msg).to_bytes()
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPoint)
    }

    /// From hex; uppercase only when `lenient` (the Choria compatibility path).
    pub fn from_hex(text: &str, lenient: bool) -> Result<Self, KeyError> {
        Self::from_bytes(&hex::decode_array::<KEY_LEN>(text, lenient)?)
    }

    /// Reads the text of a public key file, forgiving surrounding whitespace.
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        Self::from_hex(text.trim(), false)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }

    /// 64 lowercase hex characters: the public key file text and the `public_key` claim.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Whether `sig` is this key's signature over `msg`.
    ///
    /// Strict verification: small-order keys and non-canonical signatures are refused.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(sig) else {
            return false;
        };
        self.0
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_text_round_trip() {
        let kp = KeyPair::generate().unwrap();
        let text = kp.seed_text();
        assert_eq!(text.len(), 64);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let again = KeyPair::from_seed_text(&format!("{}\n", *text)).unwrap();
        assert_eq!(again.public(), kp.public());
        assert!(KeyPair::from_seed_text(&text.to_uppercase()).is_err());
        assert!(KeyPair::from_seed_text(&text[..62]).is_err());
    }

    #[test]
    fn sign_verify() {
        let kp = KeyPair::generate().unwrap();
        let sig = kp.sign(b"hello");
        assert!(kp.public().verify(b"hello", &sig));
        assert!(!kp.public().verify(b"hellO", &sig));
        assert!(!kp.public().verify(b"hello", &sig[..63]));
        assert!(!format!("{kp:?}").contains(kp.seed_text().as_str()));
    }
}
