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

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(&name);
    }
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
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

/// Facts about the request's arrival that become forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// Client IP as text.
    pub client_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The listener's port.
    pub port: u16,
    /// Accept time, epoch ms.
    pub start_ms: u64,
    /// The request id in use.
    pub request_id: &'a str,
}

/// Applies the forwarding headers; returns the `X-Forwarded-For` value sent.
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) -> String {
    // Room for the six headers below at once, not one growth step each.
    headers.reserve(6);
    let fwd = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => {
            let prev = prev.trim();
            let mut fwd = String::with_capacity(prev.len() + 2 + f.client_ip.len());
            fwd.push_str(prev);
            fwd.push_str(", ");
            fwd.push_str(f.client_ip);
            fwd
        }
        _ => f.client_ip.to_string(),
    };
    // `insert` replaces every earlier value of the header.
    match HeaderValue::from_str(&fwd) {
        Ok(v) => drop(headers.insert(&X_FORWARDED_FOR, v)),
        Err(_) => drop(headers.remove(&X_FORWARDED_FOR)),
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    headers.insert(&X_FORWARDED_PORT, HeaderValue::from(f.port));
    headers.insert(&X_REQUEST_START, HeaderValue::from(f.start_ms));
    if let Ok(v) = HeaderValue::from_str(f.request_id) {
        headers.insert(&X_REQUEST_ID, v);
    }
    append_via(headers);
    fwd
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

/// Appends `1.1 switchyard` to `Via`.
pub fn append_via(headers: &mut HeaderMap) {
    let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => HeaderValue::from_str(&format!("{prev}, {VIA}")).ok(),
        _ => None,
    };
    headers.insert(header::VIA, via.unwrap_or(HeaderValue::from_static(VIA)));
}

/// Rewrites a dyno's response headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, request_id: &str, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    append_via(headers);
    match headers.get_mut(&X_REQUEST_ID) {
        Some(v) => v.set_sensitive(true),
        None => {
            if let Ok(v) = request_id_value(request_id) {
                headers.insert(&X_REQUEST_ID, v);
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
    fn forwarding_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 cdn"));
        let fwd = add_forwarding(
            &mut h,
            &Forwarding {
                client_ip: "127.0.0.1",
                proto: "http",
                port: 8080,
                start_ms: 1700000000123,
                request_id: "abc",
            },
        );
        assert_eq!(fwd, "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert_eq!(h["x-request-start"], "1700000000123");
        assert_eq!(h["via"], "1.1 cdn, 1.1 switchyard");
    }
}
