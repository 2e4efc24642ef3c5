//! The router's one-line record of every request, and where it goes.
//!
//! The format follows Heroku's router lines (see the README's "Router log
//! line" section). Every field is present on every line; fields that do not
//! apply stay empty (`dyno= connect=`), as Heroku's do.
//!
//! ```text
//! at=info method=GET path="/x?y=1" host=demo.localhost request_id=… fwd="127.0.0.1" dyno=web.1 connect=1ms service=18ms status=200 bytes=13 protocol=http queue=0 wait=0ms
//! ```

use std::fmt::{self, Write as _};
use std::sync::Mutex;

use crate::hcode::{HCode, Level};

/// Where router lines go. Logplex implements it in-process; tests use
/// [`MemorySink`].
pub trait LogSink: Send + Sync + 'static {
    /// Emits one `heroku[router]` line for the app with id `app_id`. A
    /// router line is one line: it never holds a carriage return or line
    /// feed ([`RouterLine::write_to`] escapes control characters).
    fn router_line(&self, app_id: &str, line: &str);

    /// [`router_line`](Self::router_line), with the instant the request
    /// ended (what the line's timestamp should say), read once by the
    /// router for its own timings too. `line` is only borrowed: the router
    /// formats every line into the same per-thread buffer.
    fn router_line_at(&self, app_id: &str, line: &str, ended: tokio::time::Instant) {
        let _ = ended;
        self.router_line(app_id, line);
    }
}

/// Discards every line.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl LogSink for NullSink {
    fn router_line(&self, _app_id: &str, _line: &str) {}
}

/// Keeps every line in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct MemorySink {
    lines: Mutex<Vec<(String, String)>>,
}

impl MemorySink {
    /// All `(app_id, line)` pairs so far.
    pub fn lines(&self) -> Vec<(String, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Just the lines.
    pub fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|(_, l)| l).collect()
    }
}

impl LogSink for MemorySink {
    fn router_line(&self, app_id: &str, line: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((app_id.to_string(), line.to_string()));
        }
    }
}

/// Which side of the connection failed, for H18/H27 (`sock=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sock {
    /// The client's socket.
    Client,
    /// The dyno's socket.
    Backend,
}

/// The facts of one request, formatted into a router line by [`fmt::Display`].
#[derive(Debug, Clone, Default)]
pub struct RouterLine<'a> {
    /// The H-code, if the request ended in one.
    pub code: Option<HCode>,
    /// `sock=` prefix for H18 / H27.
    pub sock: Option<Sock>,
    /// H26 `cause="…"`.
    pub cause: Option<&'a str>,
    /// Request method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// `Host` as sent.
    pub host: &'a str,
    /// The request id used.
    pub request_id: &'a str,
    /// The X-Forwarded-For value sent to the dyno.
    pub fwd: &'a str,
    /// `web.N`, if one was chosen.
    pub dyno: Option<&'a str>,
    /// Connect time in ms, if a connection was attempted.
    pub connect_ms: Option<u64>,
    /// Service time in ms, if the request reached a dyno (or was cut).
    pub service_ms: Option<u64>,
    /// Status sent to the client (empty for H24).
    pub status: Option<u16>,
    /// Bytes from the dyno to the client (status line, headers and body).
    pub bytes: Option<u64>,
    /// `http` or `https`. This and the two versions are the router's own
    /// words (hence `'static`), written without escaping.
    pub protocol: &'static str,
    /// HTTP version label for TLS/h2 listeners (`http2`), if any.
    pub http_version: Option<&'static str>,
    /// `tls1.2` / `tls1.3` on HTTPS.
    pub tls_version: Option<&'static str>,
    /// Requests ahead of this one in the app's queue when it arrived.
    pub queue: usize,
    /// Milliseconds spent in the queue.
    pub wait_ms: u64,
    /// The router that forwarded the request to this one (the app's
    /// owner), if any: `forwarded_by=`.
    pub forwarded_by: Option<&'a str>,
    /// The owner this router forwarded the request to, on the lines it
    /// writes itself (the owner's connection failed): `forwarded_to=`.
    pub forwarded_to: Option<&'a str>,
}

/// Appends `Some(n)` as `n` followed by `unit`, `None` as nothing.
fn opt(out: &mut String, v: Option<u64>, unit: &str) {
    if let Some(v) = v {
        out.push_str(itoa::Buffer::new().format(v));
        out.push_str(unit);
    }
}

/// True for bytes that pass into a line unchanged (printable ASCII, no
/// space, quote or backslash): the common case, copied in one go.
fn plain(b: u8) -> bool {
    PLAIN[b as usize]
}

/// [`plain`] as a table: one load per byte on the per-request path.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Whether every byte of `s` is [`plain`], or with `space` a space too,
/// checked eight bytes at a time: a table load per byte was a tenth of
/// formatting a line. Each test below is exact about whether *some* byte
/// matches (the classic "has a zero byte" / "has a byte less than n" word
/// tricks, n ≤ 128), which is all that is asked.
fn all_plain(s: &str, space: bool) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let lowest = u64::from(if space { b' ' } else { b'!' });
    let mut words = s.as_bytes().chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let x = u64::from_le_bytes(w);
        let bad = (x & HIGH)
            | (x.wrapping_sub(ONES * lowest) & !x & HIGH)
            | has_zero(x ^ (ONES * 0x7f))
            | has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')));
        if bad != 0 {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| plain(b) || (space && b == b' '))
}

/// Appends a quoted value, escaping `"` and `\` and control characters.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    if all_plain(s, true) {
        out.push_str(s);
    } else {
        let mut run = 0;
        for (i, c) in s.char_indices() {
            if c == '"' || c == '\\' || c.is_control() {
                out.push_str(&s[run..i]);
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c => {
                        let _ = write!(out, "\\x{:02x}", c as u32);
                    }
                }
                run = i + c.len_utf8();
            }
        }
        out.push_str(&s[run..]);
    }
    out.push('"');
}

/// Appends an unquoted token, replacing spaces and quotes so a hostile
/// `Host` cannot forge fields.
fn token(out: &mut String, s: &str) {
    if all_plain(s, false) {
        out.push_str(s);
        return;
    }
    let mut run = 0;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() || c.is_control() || c == '"' {
            out.push_str(&s[run..i]);
            out.push('_');
            run = i + c.len_utf8();
        }
    }
    out.push_str(&s[run..]);
}

impl RouterLine<'_> {
    /// Appends the line to `out`. Written with `push_str` and `itoa` rather
    /// than `core::fmt`, which cost about 5,000 instructions a line
    /// (`callgrind`, see BENCHMARKS.md).
    pub fn write_to(&self, out: &mut String) {
        match self.sock {
            Some(Sock::Client) => out.push_str("sock=client "),
            Some(Sock::Backend) => out.push_str("sock=backend "),
            None => {}
        }
        let level = self.code.map(HCode::level).unwrap_or(Level::Info);
        out.push_str("at=");
        out.push_str(level.as_str());
        if let Some(code) = self.code {
            out.push_str(" code=");
            out.push_str(code.as_str());
            out.push_str(" desc=\"");
            out.push_str(code.desc());
            out.push('"');
        }
        if let Some(cause) = self.cause {
            out.push_str(" cause=");
            quoted(out, cause);
        }
        out.push_str(" method=");
        token(out, self.method);
        out.push_str(" path=");
        quoted(out, self.path);
        out.push_str(" host=");
        token(out, self.host);
        out.push_str(" request_id=");
        token(out, self.request_id);
        out.push_str(" fwd=");
        quoted(out, self.fwd);
        out.push_str(" dyno=");
        if let Some(dyno) = self.dyno {
            token(out, dyno);
        }
        out.push_str(" connect=");
        opt(out, self.connect_ms, "ms");
        out.push_str(" service=");
        opt(out, self.service_ms, "ms");
        out.push_str(" status=");
        opt(out, self.status.map(u64::from), "");
        out.push_str(" bytes=");
        opt(out, self.bytes, "");
        // The router's own words, written as they are.
        out.push_str(" protocol=");
        out.push_str(self.protocol);
        if let Some(v) = self.http_version {
            out.push_str(" http_version=");
            out.push_str(v);
        }
        if let Some(v) = self.tls_version {
            out.push_str(" tls_version=");
            out.push_str(v);
        }
        out.push_str(" queue=");
        out.push_str(itoa::Buffer::new().format(self.queue));
        out.push_str(" wait=");
        opt(out, Some(self.wait_ms), "ms");
        if let Some(by) = self.forwarded_by {
            out.push_str(" forwarded_by=");
            token(out, by);
        }
        if let Some(to) = self.forwarded_to {
            out.push_str(" forwarded_to=");
            token(out, to);
        }
    }
}

impl fmt::Display for RouterLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(384);
        self.write_to(&mut out);
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes_are_printable_ascii_without_quote_or_backslash() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_graphic() && b != b'"' && b != b'\\';
            assert_eq!(plain(b), expected, "byte {b:#04x}");
        }
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_table_for_every_byte_anywhere() {
        let naive = |s: &str, space: bool| s.bytes().all(|b| plain(b) || (space && b == b' '));
        for len in [1, 7, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    // Non-ASCII bytes as the UTF-8 of a character holding them.
                    let s = match std::str::from_utf8(&bytes) {
                        Ok(s) => s.to_string(),
                        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
                    };
                    for space in [false, true] {
                        assert_eq!(
                            all_plain(&s, space),
                            naive(&s, space),
                            "{s:?} space={space}"
                        );
                    }
                }
            }
        }
        assert!(all_plain("0123456789abcdef-0123", false));
        assert!(!all_plain("0123456789abcdef 0123", false));
        assert!(all_plain("/path with spaces?and=1", true));
    }

    #[test]
    fn hostile_fields_are_escaped_and_clean_runs_kept() {
        let line = RouterLine {
            method: "GET",
            path: "/a\"b\\c\u{1}d/é",
            host: "evil host\"x\ty",
            request_id: "id",
            fwd: "1.2.3.4",
            protocol: "http",
            ..RouterLine::default()
        };
        let text = line.to_string();
        assert!(text.contains(r#"path="/a\"b\\c\x01d/é""#), "{text}");
        assert!(text.contains(" host=evil_host_x_y "), "{text}");
        assert!(text.ends_with("protocol=http queue=0 wait=0ms"), "{text}");
    }

    /// What `LogSink` promises: one line, whatever the fields hold.
    #[test]
    fn a_router_line_never_holds_a_line_break() {
        let hostile = "a\r\nb\nc\rd";
        let line = RouterLine {
            cause: Some(hostile),
            method: hostile,
            path: hostile,
            host: hostile,
            request_id: hostile,
            fwd: hostile,
            dyno: Some(hostile),
            protocol: "https",
            forwarded_by: Some(hostile),
            forwarded_to: Some(hostile),
            ..RouterLine::default()
        };
        let text = line.to_string();
        assert!(!text.contains(['\r', '\n']), "{text:?}");
        assert!(text.contains(r#"path="a\x0d\x0ab\x0ac\x0dd""#), "{text:?}");
        assert!(text.contains(" dyno=a__b_c_d "), "{text:?}");
        assert!(text.ends_with(" forwarded_to=a__b_c_d"), "{text:?}");
    }
}
