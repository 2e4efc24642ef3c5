//! Heroku's header rules: what the router adds, removes and rewrites.
//!
//! Toward the dyno: hop-by-hop headers go (and any header the client named
//! in `Connection`), `Expect` is answered by the router, `X-Forwarded-For`
//! gets the client address appended, `X-Forwarded-Proto` / `-Port` are set
//! from the listener, `X-Request-Start` is the accept time in epoch
//! milliseconds, `X-Request-Id` is kept when valid (20–200 characters of
//! `[A-Za-z0-9+/=-]`) or replaced by a UUID v4, and `Via: 1.1 switchyard` is
//! appended. Toward the client: hop-by-hop headers go, `Via` and
//! `X-Request-Id` are added.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// The `Via` token this router adds.
pub const VIA: &str = "1.1 switchyard";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REQUEST_START: HeaderName = HeaderName::from_static("x-request-start");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True when `id` may be kept as the request id.
pub fn valid_request_id(id: &[u8]) -> bool {
    (20..=200).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-'))
}

/// The client's request id when valid, else a fresh UUID v4.
pub fn request_id(headers: &HeaderMap) -> String {
    match headers.get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        _ => new_request_id(),
    }
}

/// A fresh UUID v4 from the thread's CSPRNG (`rand`'s ChaCha, reseeded from
/// the OS), not a `getrandom` system call per request.
pub fn new_request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

/// Removes hop-by-hop headers, including those named in `Connection`.
/// With `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names is cheaper
    // than eight removals that each hash and probe.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Only names that are present are removed: a removal hashes and
    // probes whether or not the name is there, and a `Connection` option
    // such as `close` names no header (looking it up as `&str` parses it
    // on the stack, where making a `HeaderName` of it would allocate).
    let mut doomed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case(header::UPGRADE.as_str())))
        .filter(|t| headers.contains_key(*t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    doomed.extend(
        headers
            .keys()
            .filter(|n| is_hop_by_hop(n) && !(keep_upgrade && *n == header::UPGRADE))
            .cloned(),
    );
    for name in doomed {
        headers.remove(&name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The hop-by-hop headers removed in both directions (plus any named in
/// `Connection`, which is itself one of them).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::PROXY_AUTHORIZATION
        || name == header::UPGRADE
}

/// The forwarding fields the router sets on a request it sends on. They
/// are written straight into the request head by the router's HTTP/1.1
/// client ([`crate::upstream::codec::encode_request_head`]), replacing any
/// the client sent under the same names, rather than inserted into the
/// request's header map one hashed insertion and allocation at a time.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// `X-Forwarded-For`: the client's chain with the client appended
    /// ([`forwarded_for_chain`]).
    pub forwarded_for: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The listener's port.
    pub port: u16,
    /// Accept time, epoch ms.
    pub start_ms: u64,
    /// The request id in use.
    pub request_id: &'a str,
}

impl Forwarding<'_> {
    /// Whether a header the client sent is one of those these fields
    /// replace (`Via` is replaced by itself with this router appended).
    pub fn replaces(name: &HeaderName) -> bool {
        name.as_str().starts_with("x-")
            && (name == X_FORWARDED_FOR
                || name == X_FORWARDED_PROTO
                || name == X_FORWARDED_PORT
                || name == X_REQUEST_START
                || name == X_REQUEST_ID)
            || name == header::VIA
    }

    /// Writes the fields as header lines; `via` is the first `Via` value
    /// the client sent, which this router's token is appended to.
    pub fn write(&self, out: &mut Vec<u8>, via: Option<&[u8]>) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(self.forwarded_for.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.proto.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-port: ");
        out.extend_from_slice(n.format(self.port).as_bytes());
        out.extend_from_slice(b"\r\nx-request-start: ");
        out.extend_from_slice(n.format(self.start_ms).as_bytes());
        out.extend_from_slice(b"\r\nx-request-id: ");
        out.extend_from_slice(self.request_id.as_bytes());
        out.extend_from_slice(b"\r\nvia: ");
        if let Some(prev) = via.filter(|v| !v.is_empty()) {
            out.extend_from_slice(prev);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(VIA.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// The `X-Forwarded-For` to send: what the client sent, if anything, with
/// `client_ip` appended.
pub fn forwarded_for_chain(headers: &HeaderMap, client_ip: &str) -> String {
    match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let prev = prev.trim();
            let mut fwd = String::with_capacity(prev.len() + 2 + client_ip.len());
            fwd.push_str(prev);
            fwd.push_str(", ");
            fwd.push_str(client_ip);
            fwd
        }
        _ => client_ip.to_string(),
    }
}

/// The `X-Forwarded-For` a forwarding router set (`""` when none).
pub fn forwarded_for(headers: &HeaderMap) -> String {
    headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The client's protocol as a forwarding router set it in
/// `X-Forwarded-Proto`: `https` or `http`.
pub fn forwarded_proto(headers: &HeaderMap) -> &'static str {
    match headers.get(&X_FORWARDED_PROTO) {
        Some(v) if v.as_bytes() == b"https" => "https",
        _ => "http",
    }
}

/// Appends `1.1 switchyard` to `Via` (one hashed lookup).
pub fn append_via(headers: &mut HeaderMap) {
    match headers.entry(header::VIA) {
        Entry::Occupied(mut e) => {
            let joined = match e.get().to_str() {
                Ok(prev) if !prev.is_empty() => {
                    HeaderValue::from_str(&format!("{prev}, {VIA}")).ok()
                }
                _ => None,
            };
            // Replaces every earlier `Via` value.
            e.insert(joined.unwrap_or(HeaderValue::from_static(VIA)));
        }
        Entry::Vacant(e) => {
            e.insert(HeaderValue::from_static(VIA));
        }
    }
}

/// Rewrites a dyno's response headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, request_id: &str, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    append_via(headers);
    match headers.entry(&X_REQUEST_ID) {
        Entry::Occupied(mut e) => e.get_mut().set_sensitive(true),
        Entry::Vacant(e) => {
            if let Ok(v) = request_id_value(request_id) {
                e.insert(v);
            }
        }
    }
}

/// A request id as a header value, marked "never index": every response
/// has a fresh one, so HTTP/2's HPACK would otherwise insert each into the
/// connection's header table and evict a useful entry to make room, which
/// costs more than sending the 36 bytes literally (`sensitive` changes
/// nothing on HTTP/1.1).
pub fn request_id_value(id: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut v = HeaderValue::from_str(id)?;
    v.set_sensitive(true);
    Ok(v)
}

/// Approximate bytes of a response head on the wire (status line + headers).
pub fn head_len(headers: &HeaderMap) -> u64 {
    let fields: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    (17 + fields + 2) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_request_ids_are_distinct_uuid_v4() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(id.len(), 36);
            assert_eq!(id, &id.to_lowercase());
        }
    }

    #[test]
    fn request_id_rules() {
        assert!(valid_request_id(b"abcdefghij0123456789"));
        assert!(!valid_request_id(b"abcdefghij012345678"));
        assert!(valid_request_id("a".repeat(200).as_bytes()));
        assert!(!valid_request_id("a".repeat(201).as_bytes()));
        assert!(valid_request_id(b"abc+/=-defghij0123456789"));
        assert!(!valid_request_id(b"abcdefghij 0123456789"));
        assert!(!valid_request_id(b"abcdefghij_0123456789"));
    }

    #[test]
    fn every_value_of_every_hop_by_hop_header_goes_and_options_match_any_case() {
        let mut h: HeaderMap = [
            ("connection", "X-Secret ,Upgrade"),
            ("connection", "x-other, close,,"),
            ("x-secret", "1"),
            ("x-secret", "2"),
            ("x-other", "3"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x-t"),
            ("upgrade", "websocket"),
            ("host", "a.example"),
        ]
        .into_iter()
        .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
        .collect();
        let mut u = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().collect::<Vec<_>>(), vec![header::HOST]);
        strip_hop_by_hop(&mut u, true);
        let mut left: Vec<&str> = u.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "host", "upgrade"]);
        assert_eq!(u.get_all(header::CONNECTION).iter().count(), 1);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut u = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
        strip_hop_by_hop(&mut u, true);
        assert_eq!(
            u.get(header::UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            u.get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn forwarding_appends_and_replaces() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 cdn"));
        let fwd = forwarded_for_chain(&h, "127.0.0.1");
        assert_eq!(fwd, "10.0.0.1, 127.0.0.1");
        assert_eq!(forwarded_for_chain(&HeaderMap::new(), "::1"), "::1");
        for (name, replaced) in [
            ("x-forwarded-for", true),
            ("x-forwarded-proto", true),
            ("x-forwarded-port", true),
            ("x-request-start", true),
            ("x-request-id", true),
            ("via", true),
            ("x-forwarded-host", false),
            ("host", false),
        ] {
            let name = HeaderName::from_static(name);
            assert_eq!(Forwarding::replaces(&name), replaced, "{name}");
        }
        let f = Forwarding {
            forwarded_for: &fwd,
            proto: "http",
            port: 8080,
            start_ms: 1700000000123,
            request_id: "abc",
        };
        let mut out = Vec::new();
        f.write(&mut out, Some(b"1.1 cdn"));
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "x-forwarded-for: 10.0.0.1, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-port: 8080\r\nx-request-start: 1700000000123\r\n\
             x-request-id: abc\r\nvia: 1.1 cdn, 1.1 switchyard\r\n"
        );
    }
}
