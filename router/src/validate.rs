//! Request checks made after hyper has parsed a head and before anything
//! reaches a dyno: Heroku's limits and the request-smuggling defences that
//! hyper's parser leaves to us.
//!
//! hyper already refuses (with a bare 400 or 431, before any app is known):
//! malformed request lines, spaces in header names, obs-fold, control
//! characters in values, conflicting or malformed `Content-Length` values,
//! a `Transfer-Encoding` whose last coding is not `chunked`, any
//! `Transfer-Encoding` on HTTP/1.0, more than 1000 headers, and heads larger
//! than its buffer. With both `Transfer-Encoding: chunked` and
//! `Content-Length`, hyper drops the length, frames by chunks and closes the
//! connection after the response (RFC 9112 §6.1, and Heroku's "chunked
//! wins"), so nothing after the body is ever read as a request. A malformed
//! chunk is found while the body streams: H26 `bad chunk`, 400.
//!
//! What remains is checked here, per app, on the head as the client sent it
//! (before the router adds forwarding headers), with a precise status and an
//! H26 cause in the app's log. The router closes the connection after any
//! of these refusals, so an unread body is never parsed as a request:
//!
//! | check | status | cause |
//! |---|---|---|
//! | more than one `Host` | 400 | `bad header` |
//! | `CONNECT` | 405 | `unsupported method` |
//! | request line over `limits.request_line` | 414 | `request line too long` |
//! | more than `limits.headers` headers | 431 | `too many headers` |
//! | a header name over `limits.header_name` | 431 | `header name too long` |
//! | a header value over `limits.header_value` | 431 | `header value too long` |
//! | `Transfer-Encoding` other than `chunked` | 400 | `unsupported transfer-encoding` |
//! | `Transfer-Encoding` together with `Content-Length` (HTTP/1 never gets here, see above) | 400 | `conflicting framing` |
//! | `Content-Length` over `limits.max_body` | 413 | `request body too large` |
//! | `Expect` other than `100-continue` | 417 | `unsupported expect header value` |

use http::header;

use crate::settings::Limits;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// Status for the client.
    pub status: u16,
    /// H26 `cause="…"`.
    pub cause: &'static str,
}

const fn reject(status: u16, cause: &'static str) -> Reject {
    Reject { status, cause }
}

/// Checks a parsed request head against `limits`.
pub fn check<B>(req: &http::Request<B>, limits: &Limits) -> Result<(), Reject> {
    let headers = req.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err(reject(400, "bad header"));
    }
    if req.method() == http::Method::CONNECT {
        return Err(reject(405, "unsupported method"));
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().len())
        .unwrap_or(1);
    // `METHOD SP target SP HTTP/1.1`
    if req.method().as_str().len() + target + 10 > limits.request_line {
        return Err(reject(414, "request line too long"));
    }
    if headers.len() > limits.headers {
        return Err(reject(431, "too many headers"));
    }
    for (name, value) in headers {
        if name.as_str().len() > limits.header_name {
            return Err(reject(431, "header name too long"));
        }
        if value.len() > limits.header_value {
            return Err(reject(431, "header value too long"));
        }
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if te.peek().is_some() {
        let all_chunked = te.all(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
        if !all_chunked || headers.get_all(header::TRANSFER_ENCODING).iter().count() > 1 {
            return Err(reject(400, "unsupported transfer-encoding"));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(reject(400, "conflicting framing"));
        }
    }
    if let (Some(max), Some(len)) = (limits.max_body, content_length(headers)) {
        if len > max {
            return Err(reject(413, "request body too large"));
        }
    }
    if let Some(expect) = headers.get(header::EXPECT) {
        if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(reject(417, "unsupported expect header value"));
        }
    }
    Ok(())
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lines: &[(&str, &str)], method: &str, target: &str) -> http::Request<()> {
        let mut b = http::Request::builder().method(method).uri(target);
        for (n, v) in lines {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request")
    }

    fn cause(p: &http::Request<()>) -> Option<&'static str> {
        check(p, &Limits::default()).err().map(|r| r.cause)
    }

    #[test]
    fn heroku_limits() {
        let long = "a".repeat(8192);
        assert_eq!(
            cause(&parts(&[], "GET", &format!("/{long}"))),
            Some("request line too long")
        );
        assert_eq!(cause(&parts(&[("x-big", &long[..8000])], "GET", "/")), None);
        assert_eq!(
            cause(&parts(&[("x-big", &format!("{long}b"))], "GET", "/")),
            Some("header value too long")
        );
        let name = "n".repeat(1001);
        assert_eq!(
            cause(&parts(&[(&name, "v")], "GET", "/")),
            Some("header name too long")
        );
        let many: Vec<(String, &str)> = (0..1001).map(|i| (format!("x-{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert_eq!(cause(&parts(&many, "GET", "/")), Some("too many headers"));
        assert_eq!(cause(&parts(&many[..1000], "GET", "/")), None);
    }

    #[test]
    fn framing_and_method_rules() {
        assert_eq!(
            cause(&parts(&[("host", "a"), ("host", "b")], "GET", "/")),
            Some("bad header")
        );
        assert_eq!(
            cause(&parts(&[], "CONNECT", "example.com:443")),
            Some("unsupported method")
        );
        assert_eq!(
            cause(&parts(&[("transfer-encoding", "gzip")], "POST", "/")),
            Some("unsupported transfer-encoding")
        );
        assert_eq!(
            cause(&parts(
                &[("transfer-encoding", "gzip, chunked")],
                "POST",
                "/"
            )),
            Some("unsupported transfer-encoding")
        );
        assert_eq!(
            cause(&parts(
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                "POST",
                "/"
            )),
            Some("conflicting framing")
        );
        assert_eq!(
            cause(&parts(&[("transfer-encoding", "chunked")], "POST", "/")),
            None
        );
        assert_eq!(
            cause(&parts(&[("expect", "100-continue")], "POST", "/")),
            None
        );
        assert_eq!(
            cause(&parts(&[("expect", "200-ok")], "POST", "/")),
            Some("unsupported expect header value")
        );
        let limits = Limits {
            max_body: Some(10),
            ..Limits::default()
        };
        let p = parts(&[("content-length", "11")], "POST", "/");
        assert_eq!(
            check(&p, &limits),
            Err(reject(413, "request body too large"))
        );
    }
}
