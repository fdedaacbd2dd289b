//! Accepting gRPC C-core clients (Python, C++, Ruby) without forking h2.
//!
//! Over a Unix socket, C-core sends the percent-encoded socket path as
//! `:authority` (e.g. `tmp%2Fagent.sock`). h2 refuses that value and resets the
//! stream, so no C-core client could talk to the agent. This reader sits between
//! the socket and h2 and rewrites such `:authority` values in HEADERS and
//! CONTINUATION frames **in place, byte for byte**: `%` and other characters an
//! authority may not hold become `-`. The length never changes, so the HPACK
//! dynamic table stays in step with the client's, and later indexed references
//! resolve to the rewritten value. The agent never uses `:authority`.
//!
//! Limits: only literal values that are not Huffman-coded are rewritten (C-core
//! sends them raw); a literal split across two frames is passed through as is.

/// Client connection preface length.
const PREFACE_LEN: usize = 24;
/// HEADERS frames larger than this are passed through untouched (h2 rejects
/// anything above its 16 KiB max frame size anyway).
const MAX_REWRITE_FRAME: usize = 64 * 1024;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;

/// Incremental rewriter of the client→server byte stream.
#[derive(Debug, Default)]
pub struct Rewriter {
    preface_seen: usize,
    passthrough: usize,
    partial: Vec<u8>,
    out: Vec<u8>,
}

impl Rewriter {
    /// Feeds bytes read from the client.
    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.preface_seen < PREFACE_LEN {
                let n = (PREFACE_LEN - self.preface_seen).min(input.len());
                self.out.extend_from_slice(&input[..n]);
                self.preface_seen += n;
                input = &input[n..];
            } else if self.passthrough > 0 {
                let n = self.passthrough.min(input.len());
                self.out.extend_from_slice(&input[..n]);
                self.passthrough -= n;
                input = &input[n..];
            } else if self.partial.len() < 9 {
                let n = (9 - self.partial.len()).min(input.len());
                self.partial.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.partial.len() == 9 {
                    let len = usize::from(self.partial[0]) << 16
                        | usize::from(self.partial[1]) << 8
                        | usize::from(self.partial[2]);
                    let ty = self.partial[3];
                    if (ty == HEADERS || ty == CONTINUATION) && len <= MAX_REWRITE_FRAME {
                        self.partial.reserve(len);
                        if len == 0 {
                            self.out.append(&mut self.partial);
                        }
                    } else {
                        self.out.append(&mut self.partial);
                        self.passthrough = len;
                    }
                }
            } else {
                let len = usize::from(self.partial[0]) << 16
                    | usize::from(self.partial[1]) << 8
                    | usize::from(self.partial[2]);
                let need = 9 + len - self.partial.len();
                let n = need.min(input.len());
                self.partial.extend_from_slice(&input[..n]);
                input = &input[n..];
                if self.partial.len() == 9 + len {
                    rewrite_frame(&mut self.partial);
                    self.out.append(&mut self.partial);
                }
            }
        }
    }

    /// Moves up to `buf.len()` processed bytes out; returns how many.
    pub fn drain_into(&mut self, buf: &mut [u8]) -> usize {
        let n = self.out.len().min(buf.len());
        buf[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        n
    }

    /// Whether processed bytes are waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// At end of stream: release anything held back, unmodified.
    pub fn finish(&mut self) {
        self.out.append(&mut self.partial);
    }
}

/// Feeds `data` in chunks whose sizes come from its first byte, and checks what
/// must hold for any input: no panic, and the output is exactly as long as the
/// input. Shared by the fuzz target and the corpus replay test.
pub fn fuzz_one(data: &[u8]) {
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut r = Rewriter::default();
    let mut out = 0;
    let mut buf = [0u8; 97];
    for c in data.chunks(chunk) {
        r.feed(c);
        loop {
            let n = r.drain_into(&mut buf);
            if n == 0 {
                break;
            }
            out += n;
        }
    }
    r.finish();
    loop {
        let n = r.drain_into(&mut buf);
        if n == 0 {
            break;
        }
        out += n;
    }
    assert_eq!(out, data.len(), "the rewriter changed the stream's length");
}

/// Rewrites `:authority` literals inside one complete HEADERS/CONTINUATION frame.
fn rewrite_frame(frame: &mut [u8]) {
    let (ty, flags) = (frame[3], frame[4]);
    let payload = &mut frame[9..];
    let mut start = 0;
    let mut end = payload.len();
    if ty == HEADERS {
        if flags & 0x8 != 0 {
            // PADDED: pad length byte first, padding at the end.
            let Some(&pad) = payload.first() else { return };
            start = 1;
            end = end.saturating_sub(usize::from(pad));
        }
        if flags & 0x20 != 0 {
            start += 5; // PRIORITY
        }
    }
    if start <= end && end <= payload.len() {
        let _ = rewrite_block(&mut payload[start..end]);
    }
}

/// An HPACK integer with an `n`-bit prefix at `b[*i]`.
fn int(b: &[u8], i: &mut usize, n: u8) -> Option<usize> {
    let mask = (1u16 << n) as u8 - 1;
    let mut v = usize::from(*b.get(*i)? & mask);
    *i += 1;
    if v < usize::from(mask) {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let byte = *b.get(*i)?;
        *i += 1;
        v = v.checked_add(usize::from(byte & 0x7f).checked_shl(shift)?)?;
        shift += 7;
        if byte & 0x80 == 0 || shift > 28 {
            return (byte & 0x80 == 0).then_some(v);
        }
    }
}

/// A string literal: (huffman?, start, end) within `b`.
fn string(b: &[u8], i: &mut usize) -> Option<(bool, usize, usize)> {
    let huffman = *b.get(*i)? & 0x80 != 0;
    let len = int(b, i, 7)?;
    let start = *i;
    let end = start.checked_add(len).filter(|&e| e <= b.len())?;
    *i = end;
    Some((huffman, start, end))
}

fn rewrite_block(b: &mut [u8]) -> Option<()> {
    let mut i = 0;
    while i < b.len() {
        let first = b[i];
        let prefix = if first & 0x80 != 0 {
            int(b, &mut i, 7)?; // indexed field
            continue;
        } else if first & 0x40 != 0 {
            6 // literal with incremental indexing
        } else if first & 0x20 != 0 {
            int(b, &mut i, 5)?; // dynamic table size update
            continue;
        } else {
            4 // literal without indexing / never indexed
        };
        let index = int(b, &mut i, prefix)?;
        let is_authority = if index == 0 {
            let (huff, s, e) = string(b, &mut i)?;
            !huff && &b[s..e] == b":authority"
        } else {
            index == 1 // static table entry 1 is :authority
        };
        let (huff, s, e) = string(b, &mut i)?;
        if is_authority && !huff {
            for c in &mut b[s..e] {
                if !(c.is_ascii_alphanumeric()
                    || matches!(*c, b'.' | b'-' | b'_' | b':' | b'[' | b']'))
                {
                    *c = b'-';
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            (payload.len() >> 16) as u8,
            (payload.len() >> 8) as u8,
            payload.len() as u8,
            ty,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    /// The HEADERS block grpc-python 1.85 sent (captured), abridged.
    fn c_core_block() -> Vec<u8> {
        let mut b = vec![0x40, 0x05];
        b.extend_from_slice(b":path");
        b.push(0x1f);
        b.extend_from_slice(b"/SpiffeWorkloadAPI/FetchJWTSVID");
        b.extend_from_slice(&[0x40, 0x0a]);
        b.extend_from_slice(b":authority");
        b.push(0x0f);
        b.extend_from_slice(b"tmp%2Fdump.sock");
        b.extend_from_slice(&[0x83, 0x86]); // :method POST, :scheme http (indexed)
        b
    }

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut r = Rewriter::default();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.feed(c);
            let mut buf = [0u8; 7];
            loop {
                let n = r.drain_into(&mut buf);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        r.finish();
        let mut buf = vec![0u8; 1 << 16];
        let n = r.drain_into(&mut buf);
        out.extend_from_slice(&buf[..n]);
        out
    }

    #[test]
    fn rewrites_c_core_authority_in_any_chunking() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(0x4, 0, &[0, 3, 0, 0, 0, 100]));
        input.extend(frame(HEADERS, 0x4, &c_core_block()));
        input.extend(frame(0x0, 0x1, b"data with tmp%2Fdump.sock inside"));
        for chunk in [1, 3, 9, 10, 64, 4096] {
            let out = run(&input, chunk);
            assert_eq!(out.len(), input.len(), "length changed (chunk {chunk})");
            let text = String::from_utf8_lossy(&out);
            assert!(
                text.contains("tmp-2Fdump.sock"),
                "authority not rewritten (chunk {chunk})"
            );
            assert!(
                text.contains("/SpiffeWorkloadAPI/FetchJWTSVID"),
                "path damaged"
            );
            assert!(
                text.contains("data with tmp%2Fdump.sock inside"),
                "DATA frame touched"
            );
        }
    }

    #[test]
    fn leaves_valid_and_foreign_headers_alone() {
        let mut b = vec![0x41, 0x09]; // :authority via static index 1
        b.extend_from_slice(b"localhost");
        b.extend_from_slice(&[0x40, 0x04]);
        b.extend_from_slice(b"x-id");
        b.push(0x03);
        b.extend_from_slice(b"a%b");
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(HEADERS, 0x4, &b));
        assert_eq!(run(&input, 5), input);
    }

    #[test]
    fn garbage_never_panics() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        input.extend(frame(HEADERS, 0x2f, &[0xff, 0xff, 0xff, 0x7f, 0x40, 0x7f]));
        input.extend([0xff; 20]);
        let out = run(&input, 2);
        assert_eq!(out.len(), input.len());
    }
}
