//! Session affinity (`heroku features:enable http-session-affinity`): the
//! router sets a `heroku-session-affinity` cookie naming the dyno that
//! served a client, and sends that client's later requests to the same dyno
//! while it is up and has spare concurrency. Otherwise the request is
//! balanced as usual and the cookie is updated to the new dyno.
//!
//! The cookie value is the dyno's name (`web.2`): it chooses among dynos
//! the app already exposes, so it needs no secrecy.

use http::header::{self, HeaderMap, HeaderValue};

/// The cookie name Heroku uses.
pub const COOKIE: &str = "heroku-session-affinity";

/// The dyno named by the request's affinity cookie, if any.
pub fn dyno_from_cookies(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

/// Adds `Set-Cookie` pointing later requests at `dyno` (24 hours, as Heroku).
pub fn set_cookie(headers: &mut HeaderMap, dyno: &str) {
    let cookie = format!("{COOKIE}={dyno}; Max-Age=86400; Path=/; HttpOnly");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, v);
    }
}
