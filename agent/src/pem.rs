//! PEM text for certificates and keys: the one encoder and decoder that the
//! authority (reading `org.crt`, `chain.crt`), the sidecar (writing `svid.pem`,
//! `svid.key`, `bundle.pem`) and the tests share.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// One PEM block with `label` (e.g. `CERTIFICATE`), lines of 64 characters.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Every `CERTIFICATE` block in `text`, as DER; undecodable blocks are skipped.
pub fn decode_certs(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim() {
            "-----BEGIN CERTIFICATE-----" => {
                inside = true;
                body.clear();
            }
            "-----END CERTIFICATE-----" => {
                inside = false;
                if let Ok(der) = STANDARD.decode(&body) {
                    out.push(der);
                }
            }
            l if inside => body.push_str(l),
            _ => {}
        }
    }
    out
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
        assert_eq!(decode_certs(&certs(&both)), vec![a, b]);
        // A truncated certificate is not returned in part.
        assert!(split_der(&both[..both.len() - 1]).len() == 1);
    }
}
