//! HTTP/1.1 as the router speaks it to dynos, without I/O: request heads
//! encoded into a reusable buffer, response heads parsed out of the read
//! buffer (RFC 9112 §4–6), and chunked bodies decoded (§7.1). The I/O
//! around them is [`super`]; `fuzz/` drives these functions directly.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};

use crate::headers::Forwarding;

/// Longest response head taken from a dyno, as hyper's client allows
/// (8 KiB plus 4 KiB for each of 100 headers). Longer is H25.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;

/// Most header fields in a response head. More is H25.
pub const MAX_HEADERS: usize = 100;

/// Longest chunk-size line (size and extensions) before its CRLF.
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of trailer fields after the last chunk; they are read and
/// dropped (no client asked for them through the router).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a dyno's response cannot be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not an HTTP/1 response (H17).
    Head(&'static str),
    /// Framing that cannot be trusted, or a head over the limits (H25).
    Unsafe(&'static str),
}

impl Malformed {
    /// The message, for logs and errors.
    pub fn message(self) -> &'static str {
        match self {
            Malformed::Head(m) | Malformed::Unsafe(m) => m,
        }
    }
}

/// How the request body travels to the dyno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// Chunked: the length is not known up front.
    Chunked,
}

/// Writes the request line and header fields into `out`, adding
/// `Transfer-Encoding: chunked` when `framing` says so, and the router's
/// forwarding fields in place of any the client sent under their names.
/// `path` is origin-form (or `*`).
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
    forwarding: Option<&Forwarding<'_>>,
) {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + path.len() + fields + 64);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut via = None;
    for (name, value) in headers {
        if forwarding.is_some() && Forwarding::replaces(name) {
            if name == header::VIA && via.is_none() {
                via = Some(value.as_bytes());
            }
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(forwarding) = forwarding {
        forwarding.write(out, via);
    }
    if framing == RequestFraming::Chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk (size line, data, CRLF) to `out`.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        // An empty chunk would read as the last one.
        return;
    }
    let mut digits = [0u8; 16];
    let mut n = data.len();
    let mut at = digits.len();
    while n > 0 || at == digits.len() {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n % 16];
        n /= 16;
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, 1xx, 204, 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the dyno closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Header fields, values sharing the read buffer's memory.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: more bytes are
/// needed. On success the head's bytes are taken out of `buf`. An
/// informational (1xx) head other than `101` is taken out and skipped.
/// `head_request`: the request was `HEAD`, so the response has no body
/// whatever its header fields say.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, Malformed> {
    loop {
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(false)
            .parse_response_with_uninit_headers(&mut response, buf, &mut storage);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if buf.len() >= MAX_HEAD {
                    Err(Malformed::Unsafe("response head too large"))
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Malformed::Unsafe("too many header fields"))
            }
            Err(_) => return Err(Malformed::Head("malformed response head")),
        };
        if len > MAX_HEAD {
            return Err(Malformed::Unsafe("response head too large"));
        }
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Malformed::Head("invalid status"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue, 102, 103 Early Hints: the router answers
            // `Expect` itself and passes no interim response on.
            let _ = buf.split_to(len);
            continue;
        }
        let version = if response.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Where each field lies in `buf`, so the values can share its
        // memory once the head is split off.
        let base = buf.as_ptr() as usize;
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let count = response.headers.len();
        for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = (
                name as u32,
                h.name.len() as u32,
                value as u32,
                h.value.len() as u32,
            );
        }
        let bytes = buf.split_to(len).freeze();
        return build(status, version, &bytes, &spans[..count], head_request).map(Some);
    }
}

/// Builds the head from the fields' spans in `bytes`.
fn build(
    status: StatusCode,
    version: Version,
    bytes: &Bytes,
    spans: &[(u32, u32, u32, u32)],
    head_request: bool,
) -> Result<Head, Malformed> {
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_coded = false;
    let mut close = false;
    let mut keep_alive_token = false;
    for &(n, nl, v, vl) in spans {
        let name = &bytes[n as usize..(n + nl) as usize];
        let name =
            HeaderName::from_bytes(name).map_err(|_| Malformed::Head("invalid field name"))?;
        let value = bytes.slice(v as usize..(v + vl) as usize);
        if name == header::CONTENT_LENGTH {
            let n = content_length(&value)?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed::Unsafe("conflicting content-length"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            transfer_coded = true;
            // The last coding decides; `chunked` anywhere else is invalid,
            // and so the body runs to the close (RFC 9112 §6.3).
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| Malformed::Head("invalid field value"))?;
        headers.append(name, value);
    }
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Empty
    } else if transfer_coded {
        // Transfer-Encoding wins over Content-Length, which must not
        // travel on with it (RFC 9112 §6.1).
        headers.remove(header::CONTENT_LENGTH);
        if chunked && version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let persistent = match version {
        Version::HTTP_11 => !close,
        _ => keep_alive_token && !close,
    };
    // A message with both codings is a smuggling attempt or a broken
    // server: whatever follows it on the connection cannot be trusted.
    let keep_alive = persistent
        && framing != Framing::Close
        && !(transfer_coded && length.is_some())
        && status != StatusCode::SWITCHING_PROTOCOLS;
    Ok(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    })
}

/// A `Content-Length` value: digits, or a list of identical ones.
fn content_length(value: &[u8]) -> Result<u64, Malformed> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(Malformed::Unsafe("invalid content-length"));
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(Malformed::Unsafe("conflicting content-length"));
        }
        found = Some(n);
    }
    found.ok_or(Malformed::Unsafe("invalid content-length"))
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers { seen: usize },
    /// The body has ended.
    Done,
}

/// One step of a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body data.
    Data(Bytes),
    /// More bytes are needed.
    More,
    /// The body has ended (trailers read and dropped).
    End,
}

/// Decodes a chunked body out of the read buffer.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

impl Chunked {
    /// The body has ended.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes the next piece of the body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, Malformed> {
        const BAD: Malformed = Malformed::Unsafe("bad chunk in response body");
        loop {
            match self.state {
                ChunkState::Done => return Ok(Chunk::End),
                ChunkState::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.state = if size == 0 {
                            ChunkState::Trailers { seen: 0 }
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => return Err(BAD),
                    Ok(httparse::Status::Partial) => return Ok(Chunk::More),
                    Err(_) => return Err(BAD),
                },
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Chunk::More);
                    }
                    let take = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(take).freeze();
                    self.state = if left == take as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                    return Ok(Chunk::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Chunk::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BAD);
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers { seen } => {
                    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
                        if seen + buf.len() > MAX_TRAILERS {
                            return Err(BAD);
                        }
                        return Ok(Chunk::More);
                    };
                    let line = buf.split_to(eol + 1);
                    let empty = line.len() <= 2 && line.iter().all(|&b| b == b'\r' || b == b'\n');
                    if empty {
                        self.state = ChunkState::Done;
                        return Ok(Chunk::End);
                    }
                    if seen + line.len() > MAX_TRAILERS {
                        return Err(BAD);
                    }
                    self.state = ChunkState::Trailers {
                        seen: seen + line.len(),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<Option<Head>, Malformed> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), head_request)
    }

    #[test]
    fn request_heads_are_written_in_origin_form_with_their_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.example"));
        headers.append("x-two", HeaderValue::from_static("1"));
        headers.append("x-two", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &http::Method::POST,
            "/p?q=1",
            &headers,
            RequestFraming::Chunked,
            None,
        );
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "POST /p?q=1 HTTP/1.1\r\nhost: a.example\r\nx-two: 1\r\nx-two: 2\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let mut chunk = Vec::new();
        encode_chunk(&mut chunk, &[b'x'; 300]);
        encode_chunk(&mut chunk, b"");
        assert!(chunk.starts_with(b"12c\r\nxxx"));
        assert!(chunk.ends_with(b"x\r\n"));
        assert_eq!(chunk.len(), 5 + 300 + 2);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false)
            .expect("valid")
            .expect("complete");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.framing, Framing::Empty, "a response to HEAD has no body");
        assert_eq!(
            h.headers[header::CONTENT_LENGTH],
            "5",
            "but keeps its length"
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.headers.contains_key(header::CONTENT_LENGTH));
        assert!(!h.keep_alive, "both codings: the connection is not reused");
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h = head(
            "HTTP/1.1 204 No Content\r\nConnection: close\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", false)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.framing, Framing::Length(7));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"[..],
        );
        let h = parse_head(&mut buf, false)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.status, StatusCode::CREATED);
        assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le", false)
            .expect("valid")
            .is_none());
        let h = head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            false,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(
            (h.status.as_u16(), h.framing, h.keep_alive),
            (101, Framing::Empty, false)
        );
    }

    #[test]
    fn bad_heads_are_h17_and_untrustworthy_framing_is_h25() {
        assert_eq!(
            head("SSH-2.0-OpenSSH\r\n\r\n", false).err(),
            Some(Malformed::Head("malformed response head"))
        );
        assert!(matches!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                false
            ),
            Err(Malformed::Unsafe(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false),
            Err(Malformed::Unsafe(_))
        ));
        assert!(matches!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", false),
            Err(Malformed::Unsafe(_))
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).err(),
            Some(Malformed::Unsafe("too many header fields"))
        );
        let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            head(&huge, false).err(),
            Some(Malformed::Unsafe("response head too large"))
        );
    }

    #[test]
    fn chunked_bodies_decode_across_any_split_and_drop_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: t\r\n\r\nNEXT";
        for split in 1..wire.len() {
            let mut decoder = Chunked::default();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut body = Vec::new();
            let mut rest = &wire[split..];
            loop {
                match decoder.decode(&mut buf).expect("valid") {
                    Chunk::Data(d) => body.extend_from_slice(&d),
                    Chunk::More => {
                        let (next, tail) = rest.split_at(1.min(rest.len()));
                        assert!(!next.is_empty(), "ran out at split {split}");
                        buf.extend_from_slice(next);
                        rest = tail;
                    }
                    Chunk::End => break,
                }
            }
            assert_eq!(body, b"hello, world");
            assert!(decoder.is_done());
            let mut left = buf.to_vec();
            left.extend_from_slice(rest);
            assert_eq!(left, b"NEXT", "bytes after the body are left alone");
        }
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            let mut decoder = Chunked::default();
            let mut buf = BytesMut::from(bad);
            let mut result = Ok(Chunk::More);
            for _ in 0..4 {
                result = decoder.decode(&mut buf);
                if !matches!(result, Ok(Chunk::Data(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut decoder = Chunked::default();
        let mut endless = BytesMut::from(&b"5;"[..]);
        endless.extend_from_slice(&[b'a'; MAX_CHUNK_LINE + 1]);
        assert!(
            decoder.decode(&mut endless).is_err(),
            "an endless size line"
        );
    }
}
