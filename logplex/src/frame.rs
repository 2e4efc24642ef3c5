//! Syslog stream framing (RFC 6587), sans-I/O.
//!
//! A frame that starts with a non-zero digit followed by more digits and a
//! space is *octet-counted* (`<len> <message>`); anything else is one line,
//! ended by `\n` (a `\r` before it is dropped). The choice is made per frame,
//! so a sender may mix both. [`check`] looks at a buffer and says what the
//! next frame is, or that more bytes are needed ([`Check::Incomplete`]), the
//! way mini-redis' `Frame::check` does; [`Framer`] adds the only state a
//! stream needs: how much of an oversized frame is still to be skipped.
//!
//! [`logplex_body`] splits an `application/logplex-1` body, which must be
//! octet-counted throughout.

use bytes::{Buf, Bytes, BytesMut};

/// What [`check`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// More bytes are needed before anything can be said.
    Incomplete,
    /// A frame: the message is `buf[start..end]`; `consumed` bytes are used up.
    Frame {
        /// First byte of the message.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// Bytes of the buffer the frame took, header and terminator included.
        consumed: usize,
    },
    /// Bytes to throw away: separators between frames, or the start of a
    /// frame longer than the limit (`oversize`), whose remaining `skip_more`
    /// bytes (octet-counted) or rest of line (`skip_more == None`) must go too.
    Skip {
        /// Bytes of the buffer to discard now.
        consumed: usize,
        /// Whether this discards an oversized frame (to be counted).
        oversize: bool,
        /// For an oversized octet-counted frame, how many bytes follow the
        /// buffer; `None` for a line (skip to its `\n`).
        skip_more: Option<usize>,
    },
}

/// Longest length prefix accepted, in digits.
const MAX_DIGITS: usize = 9;

/// Looks at the start of `buf` and says what comes first. Never panics.
pub fn check(buf: &[u8], max_frame: usize) -> Check {
    let Some(&first) = buf.first() else {
        return Check::Incomplete;
    };
    if first == b'\n' || first == b'\r' || first == 0 {
        let n = buf
            .iter()
            .take_while(|b| matches!(b, b'\n' | b'\r' | 0))
            .count();
        return Check::Skip {
            consumed: n,
            oversize: false,
            skip_more: Some(0),
        };
    }
    if first.is_ascii_digit() && first != b'0' {
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        match buf.get(digits) {
            None if digits <= MAX_DIGITS => return Check::Incomplete,
            Some(b' ') if digits <= MAX_DIGITS => {
                let len = parse_len(&buf[..digits]);
                let start = digits + 1;
                if len > max_frame {
                    let have = buf.len() - start;
                    let now = have.min(len);
                    return Check::Skip {
                        consumed: start + now,
                        oversize: true,
                        skip_more: Some(len - now),
                    };
                }
                if buf.len() - start < len {
                    return Check::Incomplete;
                }
                return Check::Frame {
                    start,
                    end: start + len,
                    consumed: start + len,
                };
            }
            // Not a length prefix: the frame is a line.
            _ => {}
        }
    }
    match buf.iter().position(|&b| b == b'\n') {
        Some(nl) if nl > max_frame => Check::Skip {
            consumed: nl + 1,
            oversize: true,
            skip_more: Some(0),
        },
        Some(nl) => {
            let end = if nl > 0 && buf[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            Check::Frame {
                start: 0,
                end,
                consumed: nl + 1,
            }
        }
        None if buf.len() > max_frame => Check::Skip {
            consumed: buf.len(),
            oversize: true,
            skip_more: None,
        },
        None => Check::Incomplete,
    }
}

fn parse_len(digits: &[u8]) -> usize {
    digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'))
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is longer than the limit; it was skipped.
    #[error("frame longer than {max} bytes")]
    Oversize {
        /// The limit.
        max: usize,
    },
    /// The stream ended in the middle of an octet-counted frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skipping {
    No,
    Bytes(usize),
    Line,
}

/// A stream's framing state: [`check`] plus the skipping of oversized frames
/// that span reads.
#[derive(Debug)]
pub struct Framer {
    max_frame: usize,
    skipping: Skipping,
}

impl Framer {
    /// A framer accepting frames up to `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            skipping: Skipping::No,
        }
    }

    /// The next frame in `buf`, consuming it; `None` when more bytes are
    /// needed. An oversized frame yields one `Err` and is then skipped.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, FrameError>> {
        loop {
            match self.skipping {
                Skipping::Bytes(n) => {
                    let now = n.min(buf.len());
                    buf.advance(now);
                    if now < n {
                        self.skipping = Skipping::Bytes(n - now);
                        return None;
                    }
                    self.skipping = Skipping::No;
                }
                Skipping::Line => match buf.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        buf.advance(nl + 1);
                        self.skipping = Skipping::No;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                },
                Skipping::No => {}
            }
            match check(buf, self.max_frame) {
                Check::Incomplete => return None,
                Check::Frame {
                    start,
                    end,
                    consumed,
                } => {
                    let mut frame = buf.split_to(consumed);
                    frame.truncate(end);
                    frame.advance(start);
                    return Some(Ok(frame.freeze()));
                }
                Check::Skip {
                    consumed,
                    oversize,
                    skip_more,
                } => {
                    buf.advance(consumed);
                    self.skipping = match skip_more {
                        Some(0) => Skipping::No,
                        Some(n) => Skipping::Bytes(n),
                        None => Skipping::Line,
                    };
                    if oversize {
                        return Some(Err(FrameError::Oversize {
                            max: self.max_frame,
                        }));
                    }
                }
            }
        }
    }

    /// At the end of the stream: what is left. A last line without `\n` is
    /// a frame; the rest of an octet-counted frame is [`FrameError::Truncated`].
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Result<Bytes, FrameError>> {
        if self.skipping != Skipping::No || buf.is_empty() {
            buf.clear();
            return None;
        }
        buf.extend_from_slice(b"\n");
        match check(buf, self.max_frame) {
            Check::Frame { start: 0, .. } => self.next_frame(buf),
            Check::Skip {
                oversize: false, ..
            } => {
                buf.clear();
                None
            }
            _ => {
                buf.clear();
                Some(Err(FrameError::Truncated))
            }
        }
    }
}

/// Why an `application/logplex-1` body was rejected; names the first bad frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame {index} (at byte {offset}): {reason}")]
pub struct BodyError {
    /// 1-based number of the bad frame.
    pub index: usize,
    /// Byte offset of the bad frame in the (inflated) body.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Splits a logplex-1 body into its octet-counted messages.
pub fn logplex_body(body: &[u8], max_frame: usize) -> Result<Vec<&[u8]>, BodyError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let rest = &body[at..];
        let err = |reason| BodyError {
            index: frames.len() + 1,
            offset: at,
            reason,
        };
        // Tolerate separators between frames (some senders add `\n`).
        if matches!(rest[0], b'\n' | b'\r') {
            at += 1;
            continue;
        }
        if !(rest[0].is_ascii_digit() && rest[0] != b'0') {
            return Err(err("not octet-counted (expected `<length> <message>`)"));
        }
        match check(rest, max_frame) {
            Check::Frame {
                start,
                end,
                consumed,
            } if start > 0 => {
                frames.push(&rest[start..end]);
                at += consumed;
            }
            Check::Frame { .. } => {
                return Err(err("not octet-counted (expected `<length> <message>`)"))
            }
            Check::Incomplete => return Err(err("length exceeds the body")),
            Check::Skip { oversize: true, .. } => return Err(err("frame too long")),
            Check::Skip { .. } => return Err(err("not octet-counted")),
        }
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], max: usize) -> Vec<Result<Bytes, FrameError>> {
        let mut framer = Framer::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = framer.next_frame(&mut buf) {
            out.push(f);
        }
        out.extend(framer.finish(&mut buf));
        out
    }

    #[test]
    fn octet_counted_and_lines_mix() {
        let got = all(b"5 hello3 abc<1>x\r\n<2>y\n4 last", 100);
        let texts: Vec<_> = got.into_iter().map(|f| f.unwrap()).collect();
        assert_eq!(texts, vec!["hello", "abc", "<1>x", "<2>y", "last"]);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames() {
        let input = b"11 <13>1 hello\n<14>line two\n12 <15>1 third!";
        let mut framer = Framer::new(100);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = framer.next_frame(&mut buf) {
                out.push(f.unwrap());
            }
        }
        out.extend(framer.finish(&mut buf).map(|f| f.unwrap()));
        assert_eq!(out, vec!["<13>1 hello", "<14>line two", "<15>1 third!"]);
    }

    #[test]
    fn oversized_frames_are_skipped_exactly() {
        let mut input = b"20 ".to_vec();
        input.extend_from_slice(&[b'x'; 20]);
        input.extend_from_slice(b"2 ok");
        let got = all(&input, 10);
        assert_eq!(got[0], Err(FrameError::Oversize { max: 10 }));
        assert_eq!(got[1].as_ref().unwrap(), "ok");
        assert_eq!(got.len(), 2);
        let mut line = vec![b'y'; 30];
        line.extend_from_slice(b"\nfine\n");
        let got = all(&line, 10);
        assert_eq!(got[0], Err(FrameError::Oversize { max: 10 }));
        assert_eq!(got[1].as_ref().unwrap(), "fine");
    }

    #[test]
    fn truncated_octet_frame_at_eof() {
        assert_eq!(all(b"10 abc", 100), vec![Err(FrameError::Truncated)]);
    }

    #[test]
    fn random_input_frames_the_same_however_it_is_read() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let alphabet = b"0123456789 <>\n\rabc";
        for _ in 0..5000 {
            let len = rng.random_range(0..60);
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let whole = all(&data, 12);
            let _ = logplex_body(&data, 12);
            let _ = crate::message::parse(&data);
            let mut framer = Framer::new(12);
            let mut buf = BytesMut::new();
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < data.len() {
                let n = rng.random_range(1..=data.len() - at);
                buf.extend_from_slice(&data[at..at + n]);
                at += n;
                while let Some(f) = framer.next_frame(&mut buf) {
                    pieces.push(f);
                }
            }
            pieces.extend(framer.finish(&mut buf));
            assert_eq!(whole, pieces, "input {:?}", String::from_utf8_lossy(&data));
        }
    }

    #[test]
    fn logplex_bodies() {
        assert_eq!(
            logplex_body(b"3 abc4 defg\n", 100).unwrap(),
            vec![&b"abc"[..], b"defg"]
        );
        let err = logplex_body(b"3 abc<13>nope", 100).unwrap_err();
        assert_eq!((err.index, err.offset), (2, 5));
        let err = logplex_body(b"30 abc", 100).unwrap_err();
        assert_eq!(err.reason, "length exceeds the body");
    }
}

/// Entry points for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Frames `data` as a stream, split at `split`; must never panic.
    pub fn stream(data: &[u8], split: usize, max_frame: usize) -> usize {
        let mut framer = Framer::new(max_frame.max(1));
        let mut buf = BytesMut::new();
        let (a, b) = data.split_at(split.min(data.len()));
        let mut n = 0;
        for part in [a, b] {
            buf.extend_from_slice(part);
            while framer.next_frame(&mut buf).is_some() {
                n += 1;
            }
        }
        n + usize::from(framer.finish(&mut buf).is_some())
    }

    /// Splits `data` as a logplex-1 body; must never panic.
    pub fn body(data: &[u8]) -> usize {
        logplex_body(data, 10_240).map(|f| f.len()).unwrap_or(0)
    }
}
