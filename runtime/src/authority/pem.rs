//! PEM text for certificates and keys: the one encoder and decoder that the
//! authority (reading `org.crt`, `chain.crt`), the sidecar (writing `svid.pem`,
//! `svid.key`, `bundle.pem`) and the tests share. The text itself is the `pem`
//! crate's (already in the tree through rcgen); this module adds the
//! certificate lists the Workload API sends as concatenated DER.

/// One PEM block with `label` (e.g. `CERTIFICATE`), lines of 64 characters, `\n`.
pub fn encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Every `CERTIFICATE` block in `text`, as DER. Text that is not well-formed
/// PEM yields none: a damaged anchor file is an error where it is read ("no
/// certificate"), never a bundle with some of its certificates left out.
pub fn decode_certs(text: &str) -> Vec<Vec<u8>> {
    let Ok(blocks) = pem::parse_many(text) else {
        return Vec::new();
    };
    // `parse_many` returns the blocks before a last one that has no END line
    // and says nothing of it: a truncated `org.crt` would quietly lose a root.
    // Every BEGIN line must have become a block.
    if blocks.len() != text.matches("-----BEGIN ").count() {
        return Vec::new();
    }
    blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

/// Splits concatenated DER certificates, as the Workload API sends them (each a
/// SEQUENCE with a definite length).
pub fn split_der(mut der: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while der.len() >= 2 && der[0] == 0x30 {
        let (len, hdr) = match der[1] {
            n if n < 0x80 => (usize::from(n), 2),
            0x81 if der.len() > 2 => (usize::from(der[2]), 3),
            0x82 if der.len() > 3 => ((usize::from(der[2]) << 8) | usize::from(der[3]), 4),
            _ => break,
        };
        let total = hdr + len;
        if total > der.len() {
            break;
        }
        out.push(&der[..total]);
        der = &der[total..];
    }
    out
}

/// Concatenated DER certificates as PEM text.
pub fn certs(der: &[u8]) -> String {
    split_der(der)
        .iter()
        .map(|d| encode("CERTIFICATE", d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let a = vec![0x30, 0x03, 1, 2, 3];
        let b = vec![0x30, 0x81, 0x80]
            .into_iter()
            .chain(std::iter::repeat_n(7, 0x80))
            .collect::<Vec<u8>>();
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(split_der(&both), vec![&a[..], &b[..]]);
        assert_eq!(decode_certs(&certs(&both)), vec![a.clone(), b.clone()]);
        // A truncated certificate is not returned in part.
        assert!(split_der(&both[..both.len() - 1]).len() == 1);
        // Other blocks are not certificates; damaged text is none at all.
        let mixed = format!("{}{}", encode("PRIVATE KEY", &a), certs(&b));
        assert_eq!(decode_certs(&mixed), vec![b.clone()]);
        let damaged = certs(&both).replacen("-----END CERTIFICATE-----", "-----END CERTIFICAT", 1);
        assert!(decode_certs(&damaged).is_empty());
        // A file cut off inside its last block is damaged too, not one root fewer.
        let full = certs(&both);
        let cut = &full[..full.rfind("-----END").unwrap_or(0)];
        assert_eq!(decode_certs(&full).len(), 2);
        assert!(decode_certs(cut).is_empty());
    }
}
