//! One log line: parsed from syslog (RFC 5424 or RFC 3164, with
//! `syslog_loose`), formatted for sessions and for drains. Sans-I/O.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use syslog_loose::{ProcId, Variant};

/// `local7.info`: what Heroku gives app lines.
pub const PRI_APP: u8 = 190;
/// `local3.info`: what Heroku gives router and platform lines.
pub const PRI_HEROKU: u8 = 158;
/// `local5.warning`: what Logplex gives its L10 lines.
pub const PRI_LOSS: u8 = 172;
/// `local7.warning`: what Logplex gives its L14 lines.
pub const PRI_CERT: u8 = 188;

/// One line of a channel, as stored in history and sent to tails and drains.
///
/// A line is kept as most of the syslog frame a drain sends for it,
/// `<pri>1 timestamp source process - - msg\n`, made once when the line is
/// made: every drain writes the same bytes around its own HOSTNAME and
/// length, in a few copies instead of a dozen, and the RFC 3339 timestamp
/// is formatted once instead of once per drain. That text is shared, so a
/// line is one allocation however many histories, tails and drains hold
/// it, and a clone is a reference count.
#[derive(Clone)]
pub struct LogLine {
    /// `<pri>1 timestamp source process - - msg\n`, with `-` for an empty
    /// source or process.
    text: Arc<str>,
    /// Syslog priority (facility × 8 + severity).
    pri: u8,
    /// Where the parts are in `text`: the timestamp, then the source and
    /// the process (empty ranges where `text` has `-`), then the message
    /// (up to the `\n`).
    stamp: (u32, u32),
    source: (u32, u32),
    process: (u32, u32),
    msg_at: u32,
    /// The message is known to hold no carriage return or line feed.
    flat: bool,
}

/// A line's timestamp as its maker has it.
#[derive(Clone, Copy)]
pub(crate) enum Stamp<'a> {
    /// Spelled as [`LogLine::timestamp`] spells it.
    Text(&'a str),
    /// In parts, from a [`Stamper`].
    Spelled(Spelled<'a>),
}

impl<'a> From<&'a str> for Stamp<'a> {
    fn from(text: &'a str) -> Self {
        Stamp::Text(text)
    }
}

impl<'a> From<Spelled<'a>> for Stamp<'a> {
    fn from(spelled: Spelled<'a>) -> Self {
        Stamp::Spelled(spelled)
    }
}

thread_local! {
    /// Where a line's text is put together before it is copied into its
    /// one allocation.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Equal lines say the same thing: whether a line is known to be flat is
/// how it was made, not what it holds.
impl PartialEq for LogLine {
    fn eq(&self, other: &Self) -> bool {
        (self.pri, self.stamp, self.source, self.process, self.msg_at)
            == (
                other.pri,
                other.stamp,
                other.source,
                other.process,
                other.msg_at,
            )
            && self.text == other.text
    }
}

impl Eq for LogLine {}

impl std::fmt::Debug for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLine")
            .field("timestamp", &self.timestamp())
            .field("pri", &self.pri)
            .field("source", &self.source())
            .field("process", &self.process())
            .field("msg", &self.msg())
            .finish()
    }
}

impl LogLine {
    /// A line of `source` (the token name the line came in with: `app`,
    /// `heroku`, …), `process` (`web.1`, `router`, … or empty) and `msg`
    /// (without a trailing newline).
    pub fn new(
        time: DateTime<FixedOffset>,
        pri: u8,
        source: &str,
        process: &str,
        msg: &str,
    ) -> Self {
        Self::with_stamp(time, None, pri, source, process, msg)
    }

    /// [`new`](Self::new), with `time` already spelled as
    /// [`timestamp`](Self::timestamp) spells it, when the sender did
    /// ([`Incoming::stamp`]).
    pub(crate) fn with_stamp(
        time: DateTime<FixedOffset>,
        spelled: Option<&str>,
        pri: u8,
        source: &str,
        process: &str,
        msg: &str,
    ) -> Self {
        if let Some(stamp) = spelled {
            return Self::stamped(stamp, pri, source, process, msg, false);
        }
        match rfc3339_micros(&time) {
            // Only ASCII digits and punctuation.
            Some(b) => Self::stamped(
                std::str::from_utf8(&b).unwrap_or_default(),
                pri,
                source,
                process,
                msg,
                false,
            ),
            None => Self::stamped(
                time.format(TIMESTAMP_FORMAT).to_string().as_str(),
                pri,
                source,
                process,
                msg,
                false,
            ),
        }
    }

    /// A line whose timestamp is `stamp`: spelled as
    /// [`timestamp`](Self::timestamp) spells it, or by a [`Stamper`].
    /// `flat`: `msg` is known to hold no carriage return or line feed.
    pub(crate) fn stamped<'a>(
        stamp: impl Into<Stamp<'a>>,
        pri: u8,
        source: &str,
        process: &str,
        msg: &str,
        flat: bool,
    ) -> Self {
        let stamp = stamp.into();
        let mut line = SCRATCH.with_borrow_mut(|text| {
            text.clear();
            Self::assemble(text, stamp, pri, source, process, msg)
        });
        line.flat = flat;
        line
    }

    fn assemble(
        text: &mut String,
        stamp: Stamp<'_>,
        pri: u8,
        source: &str,
        process: &str,
        msg: &str,
    ) -> Self {
        text.push('<');
        text.push_str(itoa::Buffer::new().format(pri));
        text.push_str(">1 ");
        let at = text.len();
        match stamp {
            Stamp::Text(t) => text.push_str(t),
            Stamp::Spelled(s) => s.write(text),
        }
        let stamp = (at as u32, text.len() as u32);
        text.push(' ');
        // Each part and what follows it; `-` for an empty source or process.
        // Offsets fit in `u32`: a line is at most `max_line_bytes`, and
        // the ingest paths cut anything longer.
        let mut put = |part: &str, dash: bool, then: &str| {
            let at = text.len();
            text.push_str(if dash && part.is_empty() { "-" } else { part });
            text.push_str(then);
            (at as u32, (at + part.len()) as u32)
        };
        let source = put(source, true, " ");
        let process = put(process, true, " - - ");
        let msg = put(msg, false, "\n");
        Self {
            text: Arc::from(text.as_str()),
            pri,
            stamp,
            source,
            process,
            msg_at: msg.0,
            flat: false,
        }
    }

    /// A line stamped now.
    pub fn now(pri: u8, source: &str, process: &str, msg: &str) -> Self {
        Self::new(Utc::now().fixed_offset(), pri, source, process, msg)
    }

    fn part(&self, (from, to): (u32, u32)) -> &str {
        &self.text[from as usize..to as usize]
    }

    /// Syslog priority (facility × 8 + severity).
    pub fn pri(&self) -> u8 {
        self.pri
    }

    /// The token name the line came in with: `app`, `heroku`, …
    pub fn source(&self) -> &str {
        self.part(self.source)
    }

    /// The process: `web.1`, `router`, `api`, … (may be empty).
    pub fn process(&self) -> &str {
        self.part(self.process)
    }

    /// The message, without a trailing newline.
    pub fn msg(&self) -> &str {
        &self.text[self.msg_at as usize..self.text.len() - 1]
    }

    /// RFC 3339 with microseconds: `2026-11-22T10:00:00.123456+00:00`.
    pub fn timestamp(&self) -> &str {
        self.part(self.stamp)
    }

    /// The session format: `2026-11-22T10:00:00.123456+00:00 app[web.1]: message`.
    pub fn text(&self) -> String {
        let mut out = Vec::with_capacity(self.text.len() + 8);
        self.write_text(&mut out);
        // Every part is a `&str` of this line and the glue is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`text`](Self::text) to `out` without formatting machinery:
    /// every live tail writes every line, so this is copies of the parts
    /// the line keeps ready. A carriage return or line feed in the message
    /// (none of ours has one) is written as a space, so one line stays one
    /// line and an SSE event cannot be cut short.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        // `timestamp source` is in `text` as it is written here.
        let (stamp_source, process, msg) = (
            self.part((self.stamp.0, self.source.1)),
            self.process(),
            self.msg(),
        );
        out.reserve(stamp_source.len() + process.len() + msg.len() + 5);
        out.extend_from_slice(stamp_source.as_bytes());
        if !process.is_empty() {
            out.push(b'[');
            out.extend_from_slice(process.as_bytes());
            out.push(b']');
        }
        out.extend_from_slice(b": ");
        let at = out.len();
        out.extend_from_slice(msg.as_bytes());
        // Not looked for in a line known to be flat (router lines); in
        // others, looked for first, in one vectorised pass for both bytes:
        // a byte-by-byte pass was most of what a tail spent on a line.
        if !self.flat && memchr::memchr2(b'\n', b'\r', msg.as_bytes()).is_some() {
            for b in &mut out[at..] {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        }
    }

    /// Appends one octet-counted RFC 5424 frame ending in `\n`:
    /// `<len> <pri>1 ts host source process - - msg\n`, with `-` for an
    /// empty source or process. With `sd == false` the structured-data field
    /// is left out, as Heroku's HTTPS drains do.
    ///
    /// Every drain writes every line, so this copies the parts the line
    /// keeps ready around `host`, without a `format!` or any formatting.
    pub fn write_frame(&self, host: &str, sd: bool, out: &mut Vec<u8>) {
        // `<pri>1 ts ` and `source process - - msg\n`.
        let (stamp_end, msg_at) = (self.stamp.1 as usize, self.msg_at as usize);
        let (head, tail) = self.text.split_at(stamp_end + 1);
        // Without structured data: `source process - ` and `msg\n`.
        let (tail, msg) = if sd {
            (tail, "")
        } else {
            (&self.text[stamp_end + 1..msg_at - 2], &self.text[msg_at..])
        };
        let len = head.len() + host.len() + 1 + tail.len() + msg.len();
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(len).as_bytes();
        out.reserve(digits.len() + 1 + len);
        out.extend_from_slice(digits);
        out.push(b' ');
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(host.as_bytes());
        out.push(b' ');
        out.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(msg.as_bytes());
    }

    /// At most how many bytes [`write_frame`](Self::write_frame) appends
    /// with `host`, so that a batch's buffer is allocated once.
    pub fn frame_len_bound(&self, host: &str) -> usize {
        // Up to 20 digits of length, two spaces, `host` and the rest.
        22 + host.len() + self.text.len()
    }

    /// Whether the line passes a session's filters: `source` exactly,
    /// `dyno` exactly or as the process type before the dot (`web` ⊃ `web.1`).
    pub fn matches(&self, source: Option<&str>, dyno: Option<&str>) -> bool {
        if let Some(s) = source {
            if !s.is_empty() && self.source() != s {
                return false;
            }
        }
        if let Some(d) = dyno {
            let process = self.process();
            if !d.is_empty()
                && process != d
                && !(process.starts_with(d) && process[d.len()..].starts_with('.'))
            {
                return false;
            }
        }
        true
    }
}

/// chrono's spelling of [`LogLine::timestamp`], for the cases
/// [`rfc3339_micros`] leaves to it.
const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f%:z";

/// `n` in decimal, into the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            return &buf[at..];
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+hh:mm`, byte for byte what
/// [`TIMESTAMP_FORMAT`] gives, without its per-call parsing. `None` for
/// what it would spell differently: years outside 0..=9999, leap seconds,
/// offsets with seconds.
fn rfc3339_micros(t: &DateTime<FixedOffset>) -> Option<[u8; 32]> {
    use chrono::Timelike;
    let local = t.naive_local();
    let year = u32::try_from(local.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = local.nanosecond();
    let offset = t.offset().local_minus_utc();
    if nanos >= 1_000_000_000 || offset % 60 != 0 {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, local.month());
    put(8, 2, local.day());
    put(11, 2, local.hour());
    put(14, 2, local.minute());
    put(17, 2, local.second());
    put(20, 6, nanos / 1000);
    let minutes = offset.unsigned_abs() / 60;
    put(27, 2, minutes / 60);
    put(30, 2, minutes % 60);
    if offset < 0 {
        b[26] = b'-';
    }
    Some(b)
}

/// Spells the timestamps of a batch of lines: the date and time of day are
/// worked out once per second, only the microseconds per line.
#[derive(Debug, Default)]
pub(crate) struct Stamper {
    /// The Unix second that `second` spells.
    at: Option<i64>,
    /// That second as `YYYY-MM-DDTHH:MM:SS.`: the part of a timestamp the
    /// lines of one second share.
    second: String,
}

/// A timestamp as [`Stamper::spell`] gives it: the second's
/// `YYYY-MM-DDTHH:MM:SS.`, then `micros` as six digits, then `+00:00`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spelled<'a> {
    second: &'a str,
    micros: u32,
}

impl Spelled<'_> {
    /// Appends the timestamp to `out`, without validating its bytes again.
    fn write(self, out: &mut String) {
        out.push_str(self.second);
        // Seven digits, `1` and then the six of the microseconds with
        // their leading zeros (`micros` is below a million).
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(1_000_000 + self.micros % 1_000_000);
        out.push_str(digits.get(1..).unwrap_or_default());
        out.push_str("+00:00");
    }
}

impl Stamper {
    /// The UTC time `secs` and `nanos` after the Unix epoch as
    /// [`LogLine::timestamp`] spells it (`+00:00`); `None` where
    /// [`rfc3339_micros`] leaves it to chrono.
    pub(crate) fn spell(&mut self, secs: i64, nanos: u32) -> Option<Spelled<'_>> {
        if nanos >= 1_000_000_000 {
            return None;
        }
        if self.at != Some(secs) {
            self.at = None;
            let t = DateTime::from_timestamp(secs, 0)?;
            let stamp = rfc3339_micros(&t.fixed_offset())?;
            // ASCII digits and punctuation.
            self.second.clear();
            self.second
                .push_str(std::str::from_utf8(&stamp[..20]).ok()?);
            self.at = Some(secs);
        }
        Some(Spelled {
            second: &self.second,
            micros: nanos / 1000,
        })
    }
}

/// A syslog message as received, before token routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// Priority.
    pub pri: u8,
    /// Timestamp, if the message had a complete one.
    pub time: Option<DateTime<FixedOffset>>,
    /// `time` as the sender wrote it, when that is how
    /// [`LogLine::timestamp`] spells it too
    /// (`2026-11-22T10:00:00.123456+00:00`), so that it is not formatted
    /// again.
    pub stamp: Option<&'a str>,
    /// HOSTNAME, if the message had one. Logplex discards it, except that
    /// [`FORWARDED_HOST`] marks a line another log router of the cluster
    /// forwarded to this one, which is never forwarded again.
    pub host: Option<&'a str>,
    /// APP-NAME (RFC 5424) or TAG (RFC 3164): where the token goes.
    pub app_name: Option<&'a str>,
    /// PROCID (a number as `syslog_loose` spells it: `042` is `42`).
    pub procid: Option<Cow<'a, str>>,
    /// The message text.
    pub msg: &'a str,
}

/// Why a frame is not a syslog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The frame is empty.
    #[error("empty message")]
    Empty,
    /// The frame is not UTF-8.
    #[error("message is not UTF-8")]
    NotUtf8,
    /// The frame does not start with `<PRI>`.
    #[error("message does not start with <PRI>")]
    NoPriority,
    /// `syslog_loose` could not make sense of it.
    #[error("not an RFC 5424 or RFC 3164 message")]
    Unparsable,
}

/// Parses one frame.
pub fn parse(frame: &[u8]) -> Result<Incoming<'_>, ParseError> {
    let text = std::str::from_utf8(frame).map_err(|_| ParseError::NotUtf8)?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Err(ParseError::Empty);
    }
    let pri = leading_pri(text).ok_or(ParseError::NoPriority)?;
    if let Some(m) = parse_plain_5424(text, pri) {
        return Ok(m);
    }
    parse_loose(text, pri)
}

/// Any syslog `syslog_loose` makes sense of, RFC 5424 first, then RFC 3164.
fn parse_loose(text: &str, pri: u8) -> Result<Incoming<'_>, ParseError> {
    let year = Utc::now().year();
    let parsed = syslog_loose::parse_message_with_year_exact(text, |_| year, Variant::Either)
        .map_err(|_| ParseError::Unparsable)?;
    let procid = parsed.procid.map(|p| match p {
        ProcId::PID(n) => Cow::Owned(n.to_string()),
        ProcId::Name(s) => Cow::Borrowed(s),
    });
    let msg = parsed.msg.strip_prefix('\u{feff}').unwrap_or(parsed.msg);
    Ok(Incoming {
        pri,
        time: parsed.timestamp,
        stamp: None,
        host: parsed.hostname,
        app_name: parsed.appname,
        procid,
        msg,
    })
}

/// What nearly every sender writes — `<PRI>1 TIMESTAMP HOST APP PROCID
/// MSGID - MSG`, header fields of printable ASCII without `:`, one space
/// between them, no structured data — read without `syslog_loose`'s
/// parser combinators, which were a third of ingest's CPU. `None` for
/// anything else, which [`parse_loose`] then reads; where this returns a
/// message it is the one [`parse_loose`] gives (a test compares them).
fn parse_plain_5424(text: &str, pri: u8) -> Option<Incoming<'_>> {
    // `syslog_loose` trims the input the same way.
    let text = text.trim();
    // `<` and 1-3 digits come first (`leading_pri` checked).
    let gt = text.bytes().take(5).position(|b| b == b'>')?;
    let rest = text.get(gt + 1..)?.strip_prefix("1 ")?;
    // One pass over the header: each field is checked as it is cut, and
    // must be followed by one space.
    let bytes = rest.as_bytes();
    let mut at = 0;
    let mut token = |colons: bool| {
        let start = at;
        while let Some(&b) = bytes.get(at) {
            if b == b' ' {
                break;
            }
            if !b.is_ascii_graphic() || (!colons && b == b':') {
                return None;
            }
            at += 1;
        }
        let field = rest.get(start..at).filter(|f| !f.is_empty());
        at += 1; // the space (or past the end: the next `get` fails)
        field
    };
    let stamp = token(true)?;
    let (host, app, procid, _msgid) = (token(false)?, token(false)?, token(false)?, token(false)?);
    let sd_and_msg = rest.get(at..)?;
    let msg = match sd_and_msg.strip_prefix('-')? {
        "" => "",
        after => after.strip_prefix(' ')?.trim_start_matches([' ', '\t']),
    };
    let (time, spelled) = match stamp {
        "-" => (None, None),
        _ => match parse_rfc3339(stamp) {
            Some(t) => (Some(t), spelled_as_written(stamp)),
            None => (Some(DateTime::parse_from_rfc3339(stamp).ok()?), None),
        },
    };
    Some(Incoming {
        pri,
        time,
        stamp: spelled,
        host: (host != "-").then_some(host),
        app_name: (app != "-").then_some(app),
        procid: (procid != "-").then(|| match procid.parse::<i32>() {
            Ok(n) => pid(n, procid),
            Err(_) => Cow::Borrowed(procid),
        }),
        msg: msg.strip_prefix('\u{feff}').unwrap_or(msg),
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)` with an upper-case
/// `T` and `Z`, up to 9 digits of fraction and no leap second: what senders
/// write, read the way [`DateTime::parse_from_rfc3339`] reads it (a test
/// compares them) without its general scanner. `None` for anything else,
/// including what chrono reads differently or rejects, which is then left
/// to chrono.
fn parse_rfc3339(s: &str) -> Option<DateTime<FixedOffset>> {
    use chrono::{NaiveDate, NaiveTime, TimeZone};
    let b = s.as_bytes();
    // `YYYY-MM-DDTHH:MM:SS`: fixed places, checked all at once.
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    let d = |i: usize| u32::from(head[i].wrapping_sub(b'0'));
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if digits.iter().any(|&i| d(i) > 9) || seps.iter().any(|&(i, c)| head[i] != c) {
        return None;
    }
    let two = |i: usize| d(i) * 10 + d(i + 1);
    let date = NaiveDate::from_ymd_opt((two(0) * 100 + two(2)) as i32, two(5), two(8))?;
    let mut at = 19;
    let mut nanos = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        while let Some(c) = b.get(at).filter(|c| c.is_ascii_digit()) {
            if at == 29 {
                return None; // more than 9 digits
            }
            nanos = nanos * 10 + u32::from(c - b'0');
            at += 1;
        }
        if at == 20 {
            return None;
        }
        nanos *= [
            100_000_000,
            10_000_000,
            1_000_000,
            100_000,
            10_000,
            1000,
            100,
            10,
            1,
        ][at - 21];
    }
    // None for second 60 too: leap seconds are chrono's to read.
    let time = NaiveTime::from_hms_nano_opt(two(11), two(14), two(17), nanos)?;
    let offset = match &b[at..] {
        b"Z" => 0,
        &[sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (h1.wrapping_sub(b'0'), m1.wrapping_sub(b'0'));
            let (h2, m2) = (h2.wrapping_sub(b'0'), m2.wrapping_sub(b'0'));
            if h > 2 || h2 > 9 || m > 5 || m2 > 9 {
                return None;
            }
            let secs = (i32::from(h * 10 + h2) * 60 + i32::from(m * 10 + m2)) * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    FixedOffset::east_opt(offset)?
        .from_local_datetime(&date.and_time(time))
        .single()
}

/// `stamp`, a timestamp [`parse_rfc3339`] read, if [`LogLine::timestamp`]
/// would spell it the same: `YYYY-MM-DDTHH:MM:SS.ffffff+hh:mm` (or `-hh:mm`, but not
/// `-00:00`, which is written `+00:00`). A test checks it against
/// [`rfc3339_micros`].
fn spelled_as_written(stamp: &str) -> Option<&str> {
    let b = stamp.as_bytes();
    let canonical = b.len() == 32
        && b[10] == b'T'
        && b[19] == b'.'
        && b[20..26].iter().all(u8::is_ascii_digit)
        && matches!(b[26], b'+' | b'-')
        && b[29] == b':'
        && &b[26..] != b"-00:00";
    canonical.then_some(stamp)
}

/// A numeric PROCID `text` as `syslog_loose` gives it: `n` in decimal,
/// which is `text` itself unless `text` has a sign or leading zeros.
fn pid(n: i32, text: &str) -> Cow<'_, str> {
    let mut buf = [0u8; 11];
    let digits = decimal(u64::from(n.unsigned_abs()), &mut buf);
    let same = match text.strip_prefix('-') {
        Some(rest) => n < 0 && rest.as_bytes() == digits,
        None => n >= 0 && text.as_bytes() == digits,
    };
    if same {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(n.to_string())
    }
}

fn leading_pri(text: &str) -> Option<u8> {
    let rest = text.strip_prefix('<')?;
    let close = rest.find('>')?;
    if close == 0 || close > 3 {
        return None;
    }
    let pri: u16 = rest[..close].parse().ok()?;
    u8::try_from(pri).ok().filter(|p| *p <= 191)
}

/// Splits `msg` into pieces of at most `max` bytes, at character boundaries.
pub fn split(msg: &str, max: usize) -> Vec<&str> {
    pieces(msg, max).collect()
}

/// [`split`] without collecting the pieces: a message that fits is one
/// piece, and no `Vec` is made for it.
pub fn pieces(msg: &str, max: usize) -> impl Iterator<Item = &str> {
    let max = max.max(4);
    let mut rest = msg;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        if rest.len() <= max {
            done = true;
            return Some(rest);
        }
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, after) = rest.split_at(cut);
        rest = after;
        Some(piece)
    })
}

/// The L10 text of a drain's own stream (Logplex's form).
pub fn l10_in_drain(count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L10 (output buffer overflow): {count} messages dropped since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

/// The L10 text a router running apart writes into the app's stream for
/// the router lines it could not send to a log router (the wording of
/// [`l10_in_app`], naming the router).
pub fn l10_router(router: &str, count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L10 (output buffer overflow): router '{router}' dropped {count} messages since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

/// The L10 text a control node running apart writes into the app's stream
/// for the `heroku[api]` lines it could not send to a log router.
pub fn l10_control(node: &str, count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L10 (output buffer overflow): control node '{node}' dropped {count} messages since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

/// The L10 text a log router of a cluster writes into the app's stream for
/// the lines it could not forward to the node that owns the app's channel.
pub fn l10_log_router(node: &str, count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L10 (output buffer overflow): log router '{node}' dropped {count} messages since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

/// The line a log router writes into an app's stream when it takes the
/// app's channel over from `previous`: the history `previous` held stays
/// there (`live`) or went with it.
pub fn channel_moved(here: &str, previous: &str, live: bool, at: DateTime<Utc>) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    if live {
        format!(
            "Channel moved to log router '{here}' from '{previous}'; history before {at} stays on '{previous}'."
        )
    } else {
        format!(
            "Channel moved to log router '{here}': log router '{previous}' is gone, and the history it held before {at} was lost with it."
        )
    }
}

/// The last line of a live tail on a log router whose channel moved to
/// another node.
pub fn tail_moved(here: &str, next: &str) -> String {
    format!(
        "Channel moved from log router '{here}' to '{next}'; this session ends here: start it again to follow the app."
    )
}

/// The HOSTNAME of a line one log router of a cluster forwards to the
/// owner of its app's channel (Logplex discards HOSTNAME otherwise).
pub const FORWARDED_HOST: &str = "switchyard.forwarded";

/// The L10 text of the app's stream, naming the drain (Heroku's newer form).
pub fn l10_in_app(drain_token: &str, count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L10 (output buffer overflow): drain '{drain_token}' dropped {count} messages since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

/// The L14 text of a TLS drain whose certificate does not verify.
pub fn l14(error: &str, url: &str) -> String {
    format!("Error L14 (certificate validation): error=\"{error}\" uri=\"{url}\"")
}

/// The L11 text of a tail that could not keep up.
pub fn l11(count: u64, since: DateTime<Utc>) -> String {
    format!(
        "Error L11 (Tail buffer overflow) -> This tail session dropped {count} messages since {}.",
        since.format("%Y-%m-%dT%H:%M:%S+00:00")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_known_flat_equals_the_same_line_not_known_flat() {
        let stamp = "2026-11-30T06:00:00.000001+00:00";
        let known = LogLine::stamped(stamp, PRI_HEROKU, "heroku", "router", "at=info", true);
        let plain = LogLine::stamped(stamp, PRI_HEROKU, "heroku", "router", "at=info", false);
        assert_eq!(known, plain);
        assert_eq!(known.text(), plain.text());
        let other = LogLine::stamped(stamp, PRI_HEROKU, "heroku", "router", "at=warn", true);
        assert_ne!(known, other);
    }

    #[test]
    fn the_stamper_spells_as_chrono_does_across_seconds() {
        let mut stamper = Stamper::default();
        let start = DateTime::parse_from_rfc3339("2026-12-31T23:59:58.999998Z")
            .unwrap()
            .with_timezone(&Utc);
        for step in [0, 1, 2, 3, 999_999, 1_000_000, 1_000_002, 2_500_000] {
            let t = start + chrono::TimeDelta::microseconds(step);
            let spelled = stamper
                .spell(t.timestamp(), t.timestamp_subsec_nanos())
                .unwrap();
            let mut text = String::new();
            spelled.write(&mut text);
            let chrono = t.fixed_offset().format(TIMESTAMP_FORMAT).to_string();
            assert_eq!(text, chrono, "{step}");
            let line = LogLine::stamped(spelled, PRI_HEROKU, "heroku", "router", "m", true);
            assert_eq!(line.timestamp(), chrono, "{step}");
            assert_eq!(
                line,
                LogLine::stamped(chrono.as_str(), PRI_HEROKU, "heroku", "router", "m", true)
            );
        }
    }

    #[test]
    fn parses_rfc5424_with_token() {
        let m =
            parse(b"<190>1 2026-11-22T10:00:00.123456+00:00 host t.abc web.1 - - hello world\n")
                .unwrap();
        assert_eq!(m.pri, 190);
        assert_eq!(m.app_name, Some("t.abc"));
        assert_eq!(m.procid.as_deref(), Some("web.1"));
        assert_eq!(m.msg, "hello world");
        assert_eq!(
            m.time.unwrap().format("%H:%M:%S%.6f").to_string(),
            "10:00:00.123456"
        );
    }

    #[test]
    fn parses_rfc3164() {
        let m = parse(b"<13>Nov 22 10:00:00 myhost t.abc[42]: old style").unwrap();
        assert_eq!(m.app_name, Some("t.abc"));
        assert_eq!(m.procid.as_deref(), Some("42"));
        assert_eq!(m.msg, "old style");
    }

    #[test]
    fn uuid_tokens_and_named_procids_survive_both_formats() {
        let token = "t.6f1c2a9e-0b1d-4c3e-9f00-123456789abc";
        let old = format!("<13>Nov 22 10:00:00 myhost {token}[web.1]: hi");
        let m = parse(old.as_bytes()).unwrap();
        assert_eq!(
            (m.app_name, m.procid.as_deref(), m.msg),
            (Some(token), Some("web.1"), "hi")
        );
        let new = format!("<13>1 - - {token} - - - hi");
        let m = parse(new.as_bytes()).unwrap();
        assert_eq!(
            (m.app_name, m.procid, m.time, m.msg),
            (Some(token), None, None, "hi")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"hello"), Err(ParseError::NoPriority));
        assert_eq!(parse(b"\xff\xfe"), Err(ParseError::NotUtf8));
        assert_eq!(parse(b"  \n"), Err(ParseError::Empty));
        assert_eq!(parse(b"<999>1 x"), Err(ParseError::NoPriority));
    }

    #[test]
    fn formats_text_and_frames() {
        let line = LogLine::new(
            DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456+00:00").unwrap(),
            190,
            "app",
            "web.1",
            "hi",
        );
        assert_eq!(
            line.text(),
            "2026-11-22T10:00:00.123456+00:00 app[web.1]: hi"
        );
        let mut out = Vec::new();
        line.write_frame("d.x", true, &mut out);
        let body = "<190>1 2026-11-22T10:00:00.123456+00:00 d.x app web.1 - - hi\n";
        assert_eq!(out, format!("{} {body}", body.len()).into_bytes());
        out.clear();
        line.write_frame("host", false, &mut out);
        let body = "<190>1 2026-11-22T10:00:00.123456+00:00 host app web.1 - hi\n";
        assert_eq!(out, format!("{} {body}", body.len()).into_bytes());
    }

    #[test]
    fn session_text_is_one_line_whatever_the_message_holds() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456+00:00").unwrap();
        // Past the first vector's width too, where the search runs wide.
        let long = format!("{}\r{}", "x".repeat(100), "y".repeat(40));
        let long_shown = format!("{} {}", "x".repeat(100), "y".repeat(40));
        for (msg, shown) in [
            ("a\nb\r\nc", "a b  c"),
            ("\r", " "),
            ("plain text", "plain text"),
            (long.as_str(), long_shown.as_str()),
        ] {
            let line = LogLine::new(t, 190, "app", "web.1", msg);
            assert_eq!(line.msg(), msg, "kept as sent");
            assert_eq!(
                line.text(),
                format!("2026-11-22T10:00:00.123456+00:00 app[web.1]: {shown}")
            );
        }
    }

    #[test]
    fn frames_are_what_a_format_of_the_fields_gives() {
        let reference = |l: &LogLine, host: &str, sd: bool| {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            let body = format!(
                "<{}>1 {} {host} {} {} -{}{}\n",
                l.pri(),
                l.timestamp(),
                dash(l.source()),
                dash(l.process()),
                if sd { " - " } else { " " },
                l.msg()
            );
            format!("{} {body}", body.len()).into_bytes()
        };
        for (pri, source, process, msg) in [
            (0, "", "", ""),
            (9, "app", "", "x"),
            (10, "", "web.1", "- - \n"),
            (191, "heroku", "router", "é ü"),
        ] {
            let msg = msg.repeat(40);
            let line = LogLine::now(pri, source, process, &msg);
            assert_eq!(
                (line.pri(), line.source(), line.process(), line.msg()),
                (pri, source, process, msg.as_str())
            );
            for (host, sd) in [("d.x", true), ("host", false), ("", true)] {
                let mut out = b"kept".to_vec();
                line.write_frame(host, sd, &mut out);
                assert_eq!(out[4..], reference(&line, host, sd), "{line:?} {sd}");
                assert!(out.len() - 4 <= line.frame_len_bound(host));
            }
        }
    }

    #[test]
    fn fast_timestamps_match_chrono() {
        use chrono::TimeZone;
        let mut checked = 0;
        for (i, secs) in [
            0i64,
            1,
            59,
            86_399,
            951_782_400,
            1_795_000_000,
            4_102_444_799,
        ]
        .into_iter()
        .enumerate()
        {
            for offset in [0, 3600, -3600, 19_800, -34_200, 50_400, -43_200] {
                for nanos in [0u32, 1_000, 123_456_789, 999_999_999] {
                    let tz = FixedOffset::east_opt(offset).unwrap();
                    let t = tz.timestamp_opt(secs + i as i64, nanos).unwrap();
                    let line = LogLine::new(t, PRI_APP, "app", "web.1", "x");
                    assert_eq!(
                        line.timestamp(),
                        t.format(TIMESTAMP_FORMAT).to_string(),
                        "{t:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 100);
        // What the fast path leaves to chrono is still spelled by chrono.
        let odd = FixedOffset::east_opt(30).unwrap();
        let t = odd.timestamp_opt(1_795_000_000, 5_000).unwrap();
        assert!(rfc3339_micros(&t).is_none());
        let line = LogLine::new(t, PRI_APP, "app", "web.1", "x");
        assert_eq!(line.timestamp(), t.format(TIMESTAMP_FORMAT).to_string());
        let mut out = Vec::new();
        line.write_frame("h", true, &mut out);
        let body = format!("<190>1 {} h app web.1 - - x\n", line.timestamp());
        assert_eq!(out, format!("{} {body}", body.len()).into_bytes());
    }

    #[test]
    fn the_plain_5424_path_reads_what_syslog_loose_reads() {
        use rand::{Rng, SeedableRng};
        // Mostly the first (plain) choice, so that both paths get exercised.
        let pick = |rng: &mut rand::rngs::StdRng, xs: &[&'static str]| {
            if rng.random_bool(0.8) {
                xs[0]
            } else {
                xs[rng.random_range(0..xs.len())]
            }
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(5424);
        let versions = ["1", "1", "1", "2", "01", "", "1\t"];
        let seps = [" ", " ", " ", " ", "  ", "\t", "\u{a0}", " \t"];
        let stamps = [
            "2026-11-22T10:00:00.123456+00:00",
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.1-07:30",
            "2026-11-22t10:00:00z",
            "2026-11-22T10:00:00.1234567891234+01:00",
            "2026-13-22T10:00:00Z",
            "2026-11-22T10:00:60Z",
            "-",
            "-x",
            "Nov 22 10:00:00",
        ];
        let tokens = [
            "host",
            "t.6f1c2a9e-0b1d-4c3e-9f00-123456789abc",
            "web.1",
            "-",
            ":",
            "a:",
            "a:b",
            "42",
            "0042",
            "+7",
            "-3",
            "99999999999",
            "é",
            "ID47",
            "[x]",
        ];
        let sds = [
            "-",
            "-",
            "-",
            "-x",
            "[a b=\"c\"]",
            "[a b=\"c\"][d]",
            "--",
            "",
            "- -",
        ];
        let msgs = [
            "hello world",
            "",
            " leading",
            "\tx",
            "trailing  ",
            "\u{feff}bom",
            "a: b",
            "- x",
            "  \t ",
            "é ü",
            "[z]",
        ];
        let mut fast = 0;
        for _ in 0..20_000 {
            let mut text = format!("<{}>", rng.random_range(0..=191));
            text += pick(&mut rng, &versions);
            text += pick(&mut rng, &seps);
            text += pick(&mut rng, &stamps);
            for _ in 0..4 {
                text += pick(&mut rng, &seps);
                text += pick(&mut rng, &tokens);
            }
            if rng.random_bool(0.95) {
                text += pick(&mut rng, &seps);
                text += pick(&mut rng, &sds);
                if rng.random_bool(0.9) {
                    text += pick(&mut rng, &seps);
                    text += pick(&mut rng, &msgs);
                }
            }
            let pri = leading_pri(&text).unwrap();
            if let Some(m) = parse_plain_5424(&text, pri) {
                fast += 1;
                if let Some(stamp) = m.stamp {
                    let time = m.time.unwrap();
                    assert_eq!(LogLine::new(time, 0, "", "", "").timestamp(), stamp);
                }
                let m = Incoming { stamp: None, ..m };
                assert_eq!(Ok(m), parse_loose(&text, pri), "{text:?}");
            }
        }
        assert!(fast > 1_000, "the plain path took only {fast}");
        assert!(fast < 19_000, "the plain path took {fast}");
    }

    #[test]
    fn the_plain_rfc3339_path_reads_what_chrono_reads() {
        use rand::{Rng, SeedableRng};
        // The instant and the offset: `DateTime`'s `==` compares instants only.
        let exact = |t: DateTime<FixedOffset>| (t.naive_utc(), t.offset().local_minus_utc());
        let chrono = |s: &str| DateTime::parse_from_rfc3339(s).ok().map(exact);
        for s in [
            "2026-11-22T10:00:00.123456+00:00",
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.1-07:30",
            "2026-11-22T23:59:59.999999999+23:59",
            "2024-02-29T00:00:00-23:59",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.5+14:00",
            "2026-11-22T10:00:00-00:00",
        ] {
            assert_eq!(parse_rfc3339(s).map(exact), chrono(s), "{s}");
            assert!(chrono(s).is_some(), "{s}");
        }
        // `-00:00` is read as `+00:00` and so written.
        let minus_zero = "2026-11-22T10:00:00.123456-00:00";
        assert!(parse_rfc3339(minus_zero).is_some());
        assert_eq!(spelled_as_written(minus_zero), None);
        let plain = "2026-11-22T10:00:00.123456-07:30";
        assert_eq!(spelled_as_written(plain), Some(plain));
        // What the plain path leaves to chrono.
        for s in [
            "2026-11-22t10:00:00Z",
            "2026-11-22 10:00:00Z",
            "2026-11-22T10:00:00z",
            "2026-11-22T10:00:00.1234567891+01:00",
            "2016-12-31T23:59:60Z",
            "2026-11-22T10:00:00",
            "2026-11-22T10:00:00+0100",
            "2026-11-22T10:00:00+24:00",
            "2026-11-22T10:00:00.Z",
            "2026-02-29T10:00:00Z",
            "+2026-11-22T10:00:00Z",
            "",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
        // Random stamps, mostly well-formed, each part sometimes off.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3339);
        let (mut fast, mut same_spelling) = (0, 0);
        for _ in 0..50_000 {
            let odd = |rng: &mut rand::rngs::StdRng| rng.random_bool(0.05);
            let two = |rng: &mut rand::rngs::StdRng, max: u32| {
                let n = if odd(rng) {
                    rng.random_range(0..100)
                } else {
                    rng.random_range(0..=max)
                };
                format!("{n:02}")
            };
            let year = match rng.random_range(0..10) {
                0 => [
                    "0000", "1900", "2000", "2100", "9999", "123", "20x6", "12345",
                ][rng.random_range(0..8)]
                .to_string(),
                _ => format!("{:04}", rng.random_range(1960..2040)),
            };
            let month = two(&mut rng, 12);
            let day = two(&mut rng, 31);
            let (hour, minute, second) = (two(&mut rng, 23), two(&mut rng, 59), two(&mut rng, 60));
            let t = ["T", "t", " ", "x"][if odd(&mut rng) {
                rng.random_range(0..4)
            } else {
                0
            }];
            let sep = if odd(&mut rng) { "/" } else { "-" };
            let mut s = format!("{year}{sep}{month}-{day}{t}{hour}:{minute}:{second}");
            if rng.random_bool(0.7) {
                s.push('.');
                for _ in 0..rng.random_range(0..=12) {
                    s.push(char::from(b'0' + rng.random_range(0..10u8)));
                }
            }
            match rng.random_range(0..10) {
                0..=3 => s.push_str(["Z", "Z", "Z", "z", "", "ZZ", "UTC"][rng.random_range(0..7)]),
                _ => {
                    s.push(
                        ['+', '-', ' '][if odd(&mut rng) {
                            2
                        } else {
                            rng.random_range(0..2)
                        }],
                    );
                    s += &two(&mut rng, 23);
                    s += if odd(&mut rng) { "" } else { ":" };
                    s += &two(&mut rng, 59);
                }
            }
            if let Some(t) = parse_rfc3339(&s) {
                fast += 1;
                assert_eq!(Some(exact(t)), chrono(&s), "{s:?}");
                if let Some(spelled) = spelled_as_written(&s) {
                    same_spelling += 1;
                    assert_eq!(
                        rfc3339_micros(&t).as_ref().map(|b| &b[..]),
                        Some(spelled.as_bytes())
                    );
                }
            }
        }
        assert!(fast > 10_000, "the plain path took only {fast}");
        assert!(
            same_spelling > 500,
            "only {same_spelling} were spelled as written"
        );
    }

    #[test]
    fn dyno_filter_matches_type_and_name() {
        let line = LogLine::now(PRI_APP, "app", "web.1", "x");
        assert!(line.matches(Some("app"), Some("web")));
        assert!(line.matches(None, Some("web.1")));
        assert!(!line.matches(None, Some("we")));
        assert!(!line.matches(Some("heroku"), None));
    }

    #[test]
    fn splits_on_char_boundaries() {
        let s = "é".repeat(10);
        let parts = split(&s, 5);
        assert!(parts.iter().all(|p| p.len() <= 5));
        assert_eq!(parts.concat(), s);
        assert_eq!(split("abc", 10), vec!["abc"]);
        assert_eq!(split("", 10), vec![""]);
        assert_eq!(split("abcdefgh", 4), vec!["abcd", "efgh"]);
    }
}

/// Entry points for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses one frame; must never panic.
    pub fn parse(data: &[u8]) -> bool {
        super::parse(data).is_ok()
    }
}
