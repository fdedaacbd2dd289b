//! The `device` node attestor: challenge-response with an ed25519 key pinned at
//! the issuer (IoT gateways, machines with a TPM-held or burned-in key).
//!
//! The device signs [`challenge`]: a domain tag, the issuer's fresh nonce and the
//! public key the agent will hold. The nonce stops replay; the agent key binds the
//! signature to this enrolment, so a captured signature cannot enrol a different
//! agent key even within the same session.

use futures_util::future::BoxFuture;
use lanyard_token::PublicKey;

use super::{
    is_plain_name, AttestedNode, NodeAttestError, NodeAttestor, NodeEvidence, NodeRegistry,
};
use crate::Selector;

/// The attestor name and selector type.
pub const NAME: &str = "device";
/// Longest device name.
pub const MAX_NAME_LEN: usize = 128;
/// Domain separation: a device key signing for lanyard cannot be tricked into
/// producing a signature that means something elsewhere, nor the reverse.
const CONTEXT: &[u8] = b"lanyard-device-attest-v1\0";

/// The bytes a device signs: `b"lanyard-device-attest-v1\0" || nonce || agent key`.
///
/// The nonce has no length prefix: the tag fixes where it starts and the agent key
/// is always 32 bytes at the end, so the split is unambiguous.
pub fn challenge(nonce: &[u8], agent_public_key: &PublicKey) -> Vec<u8> {
    let key = agent_public_key.as_bytes();
    let mut msg = Vec::with_capacity(CONTEXT.len() + nonce.len() + key.len());
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(nonce);
    msg.extend_from_slice(key);
    msg
}

/// Whether `name` is a valid device name: 1..=128 of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    is_plain_name(name, MAX_NAME_LEN)
}

/// Verifies device signatures against keys pinned in the issuer's store.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeviceAttestor;

impl DeviceAttestor {
    /// The attestor.
    pub fn new() -> Self {
        Self
    }
}

impl NodeAttestor for DeviceAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest<'a>(
        &'a self,
        evidence: &'a NodeEvidence,
        registry: &'a dyn NodeRegistry,
        nonce: &'a [u8],
        agent_public_key: &'a PublicKey,
        _now: u64,
    ) -> BoxFuture<'a, Result<AttestedNode, NodeAttestError>> {
        Box::pin(async move {
            let NodeEvidence::DeviceKey { name, signature } = evidence else {
                return Err(NodeAttestError::WrongEvidence);
            };
            // No device can be pinned under an invalid name: don't ask the store.
            if !valid_name(name) {
                return Err(NodeAttestError::UnknownDevice);
            }
            let key = registry
                .device_key(name)
                .await
                .map_err(NodeAttestError::Registry)?
                .ok_or(NodeAttestError::UnknownDevice)?;
            if !key.verify(&challenge(nonce, agent_public_key), signature) {
                return Err(NodeAttestError::BadSignature);
            }
            // valid_name() guarantees a well-formed selector.
            let selector = Selector::new(NAME, "name", name);
            Ok(AttestedNode::new(NAME, name.clone(), vec![selector], true))
        })
    }
}

#[cfg(test)]
mod tests {
    use lanyard_token::KeyPair;

    use super::super::testing::{block_on, FakeRegistry};
    use super::*;

    struct Setup {
        reg: FakeRegistry,
        device: KeyPair,
        agent: PublicKey,
    }

    fn setup() -> Setup {
        let device = KeyPair::generate().unwrap();
        let mut reg = FakeRegistry::default();
        reg.devices.insert("gw-7".into(), device.public());
        Setup {
            reg,
            device,
            agent: KeyPair::generate().unwrap().public(),
        }
    }

    fn attest(
        s: &Setup,
        name: &str,
        sig: &[u8],
        nonce: &[u8],
    ) -> Result<AttestedNode, NodeAttestError> {
        let ev = NodeEvidence::DeviceKey {
            name: name.into(),
            signature: sig.to_vec(),
        };
        block_on(DeviceAttestor.attest(&ev, &s.reg, nonce, &s.agent, 0))
    }

    #[test]
    fn challenge_layout() {
        let agent = KeyPair::from_seed(&[1; 32]).public();
        let msg = challenge(b"NONCE", &agent);
        assert_eq!(&msg[..25], b"lanyard-device-attest-v1\0");
        assert_eq!(&msg[25..30], b"NONCE");
        assert_eq!(&msg[30..], agent.as_bytes());
    }

    #[test]
    fn good_signature() {
        let s = setup();
        let sig = s.device.sign(&challenge(b"n1", &s.agent));
        let node = attest(&s, "gw-7", &sig, b"n1").unwrap();
        assert_eq!(node.attestor(), "device");
        assert_eq!(node.name(), "gw-7");
        assert_eq!(node.selectors()[0].as_str(), "device:name:gw-7");
        assert!(node.can_reattest());
    }

    #[test]
    fn refusals() {
        let s = setup();
        // Signed for another agent key: cannot enrol ours.
        let other = KeyPair::generate().unwrap().public();
        let sig = s.device.sign(&challenge(b"n1", &other));
        assert_eq!(
            attest(&s, "gw-7", &sig, b"n1").unwrap_err(),
            NodeAttestError::BadSignature
        );
        // Signed over an old nonce.
        let sig = s.device.sign(&challenge(b"n0", &s.agent));
        assert_eq!(
            attest(&s, "gw-7", &sig, b"n1").unwrap_err(),
            NodeAttestError::BadSignature
        );
        // Right message, wrong key.
        let sig = KeyPair::generate()
            .unwrap()
            .sign(&challenge(b"n1", &s.agent));
        assert_eq!(
            attest(&s, "gw-7", &sig, b"n1").unwrap_err(),
            NodeAttestError::BadSignature
        );
        assert_eq!(
            attest(&s, "gw-7", &sig[..10], b"n1").unwrap_err(),
            NodeAttestError::BadSignature
        );
        // Unknown and invalid names.
        let sig = s.device.sign(&challenge(b"n1", &s.agent));
        assert_eq!(
            attest(&s, "gw-8", &sig, b"n1").unwrap_err(),
            NodeAttestError::UnknownDevice
        );
        assert_eq!(
            attest(&s, "gw 7", &sig, b"n1").unwrap_err(),
            NodeAttestError::UnknownDevice
        );
        assert_eq!(
            attest(&s, "", &sig, b"n1").unwrap_err(),
            NodeAttestError::UnknownDevice
        );
        let long = "a".repeat(129);
        assert_eq!(
            attest(&s, &long, &sig, b"n1").unwrap_err(),
            NodeAttestError::UnknownDevice
        );
    }

    #[test]
    fn names() {
        assert!(valid_name("gw-7.site_a"));
        assert!(valid_name(&"a".repeat(128)));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("é"));
    }
}
