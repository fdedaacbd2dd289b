//! The few DER encodings lanyard writes itself: rcgen has no URI name
//! constraints and no UTF8String custom extension, and both are a tag, a
//! length and a body.

/// A DER TLV: `tag`, the definite length of `body`, then `body`.
pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let be = len.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(body);
    out
}

/// The body of one DER TLV with `tag` that spans all of `der`.
pub fn body(tag: u8, der: &[u8]) -> Option<&[u8]> {
    let (&t, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (t == tag && body.len() == len).then_some(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_at_every_length() {
        for n in [0, 1, 127, 128, 255, 256, 1500, 70_000] {
            let text = vec![b'a'; n];
            assert_eq!(body(0x0c, &tlv(0x0c, &text)), Some(text.as_slice()), "{n}");
        }
        assert_eq!(body(0x0c, &[0x04, 1, b'a']), None, "another tag");
        assert_eq!(body(0x0c, &[0x0c, 2, b'a']), None, "short");
        assert_eq!(body(0x0c, &[0x0c, 0x81]), None, "truncated length");
    }
}
