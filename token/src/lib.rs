//! lanyard's token core: ed25519 keys and seed files, KSUIDs, Choria-compatible
//! chained tokens (org issuer → chain issuer → leaf), proof of possession, and
//! verification that needs only the org public key.
//!
//! Pure by design: no async runtime, no file I/O, and no implicit clock. Every
//! function that depends on time takes `now` as Unix seconds.

pub mod claims;
pub mod constraints;
pub mod deny;
pub mod duration;
pub mod fuzzing;
pub mod hex;
pub mod jws;
pub mod keys;
pub mod ksuid;
pub mod mint;
pub mod pop;
pub mod subject;
pub mod verify;

pub use claims::{ChainGrant, Claims, Confirmation, Constraints};
pub use deny::{DenyListError, VerifiedDenyList};
pub use keys::{KeyError, KeyPair, PublicKey};
pub use ksuid::Ksuid;
pub use mint::{delegate, ChainIssuer, DelegateRequest, LeafRequest, MintError};
pub use pop::ProofError;
pub use verify::{Anchor, Rules, VerifiedToken, Verifier, VerifyError};

/// Reads a token file's text: the token itself, without surrounding whitespace
/// (Choria's fixtures end in a newline).
pub fn token_text(file_text: &str) -> &str {
    file_text.trim()
}
