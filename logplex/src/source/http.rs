//! The logplex HTTP listener: `POST /logs` (Logplex's HTTP input) and
//! `GET /sessions/{id}` (log sessions), plus `GET /healthcheck`.
//!
//! `POST /logs` wants `Content-Type: application/logplex-1` (or
//! `application/x-logplex-1`), Basic auth with user `token` and a `t.<uuid>`
//! token as password (401 otherwise), a body of octet-counted RFC 5424
//! frames (gzip accepted with `Content-Encoding: gzip`), and, if sent,
//! `Logplex-Msg-Count` equal to the number of frames. The whole request is
//! checked before any line is taken: 400 names the first bad frame. 204 on
//! success. All lines go to the token's channel. The whole body must arrive
//! within [`LogplexSettings::http_body_timeout`](crate::LogplexSettings)
//! (408 otherwise, and the connection is closed), so a sender that stalls
//! or trickles mid-body does not hold its connection and buffer for ever;
//! the head has [`LogplexSettings::http_head_timeout`](crate::LogplexSettings)
//! (hyper's header timer, which also times a kept-alive connection's wait
//! for its next head). A gzip body is inflated on a blocking thread, up to
//! `max_body_bytes`.

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as IncomingBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::frame;
use crate::hub::{Logplex, TokenRoute, Transport};
use crate::message;
use crate::session::Format;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Serves `POST /logs` and `GET /sessions/{id}` until `shutdown` resolves.
/// Stops accepting then; open session streams end with the runtime. At
/// most [`LogplexSettings::max_http_connections`](crate::LogplexSettings)
/// connections are open at once (more are closed on arrival), and each
/// request head must be in within `http_head_timeout`.
pub async fn serve_http(
    listener: TcpListener,
    logplex: Arc<Logplex>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let lp = logplex.clone();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(logplex.settings().http_head_timeout);
    let builder = Arc::new(builder);
    super::listener::accept_loop(
        listener,
        &logplex,
        Transport::Http,
        shutdown,
        move |stream, peer, place| {
            let logplex = lp.clone();
            let builder = builder.clone();
            async move {
                let _place = place;
                let service = service_fn(move |req| {
                    let logplex = logplex.clone();
                    async move { Ok::<_, Infallible>(handle(&logplex, req).await) }
                });
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "logplex http connection ended");
                }
            }
        },
    )
    .await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut body = body.into();
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

async fn handle(logplex: &Logplex, req: Request<IncomingBody>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, "/logs") => post_logs(logplex, req).await,
        (&Method::GET, "/healthcheck") => text(StatusCode::OK, "OK"),
        (&Method::GET, p) if p.starts_with("/sessions/") => {
            let id = &p["/sessions/".len()..];
            session(logplex, id, req.headers())
        }
        (_, "/logs") => text(StatusCode::METHOD_NOT_ALLOWED, "Use POST"),
        _ => text(StatusCode::NOT_FOUND, "Not found"),
    }
}

fn session(logplex: &Logplex, id: &str, headers: &HeaderMap) -> Response<Body> {
    let sse = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
    let format = if sse {
        Format::EventStream
    } else {
        Format::Text
    };
    let Some(body) = logplex.open_session(id, format) else {
        return text(StatusCode::NOT_FOUND, "Session not found or expired");
    };
    let mut resp = Response::new(body.boxed_unsync());
    let content_type = if sse {
        "text/event-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    resp
}

/// The token of a `Basic token:t.<uuid>` header, if any.
fn basic_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, creds) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    (user == "token").then(|| pass.to_string())
}

fn unauthorized() -> Response<Body> {
    let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=Logplex"),
    );
    resp
}

async fn post_logs(logplex: &Logplex, req: Request<IncomingBody>) -> Response<Body> {
    let Some(route) = basic_token(req.headers()).and_then(|t| logplex.token(&t)) else {
        return unauthorized();
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !matches!(
        content_type.as_deref(),
        Some("application/logplex-1" | "application/x-logplex-1")
    ) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/logplex-1",
        );
    }
    let gzip = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(|s| s.trim().to_ascii_lowercase()))
    {
        None => false,
        Some(Ok(e)) if e == "gzip" || e == "x-gzip" => true,
        Some(Ok(e)) if e == "identity" => false,
        Some(_) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip or identity",
            )
        }
    };
    let msg_count = match req.headers().get("logplex-msg-count") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => return text(StatusCode::BAD_REQUEST, "Logplex-Msg-Count is not a number"),
        },
    };
    let max = logplex.settings().max_body_bytes;
    let within = logplex.settings().http_body_timeout;
    let body =
        match tokio::time::timeout(within, Limited::new(req.into_body(), max).collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Body larger than {max} bytes"),
                )
            }
            Ok(Err(e)) => {
                // The sender broke the framing or went away mid-body; if it is
                // still there it gets told, and the connection is not reused.
                let mut resp = text(StatusCode::BAD_REQUEST, format!("Body unreadable: {e}"));
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                return resp;
            }
            Err(_) => {
                let mut resp = text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("Body not received within {} s", within.as_secs_f64()),
                );
                resp.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
                return resp;
            }
        };
    let body = if gzip {
        // Inflating up to `max` bytes is CPU work of its own (a few ms per
        // MiB): on a blocking thread, so it never holds up the I/O of the
        // connections that share this worker.
        match tokio::task::spawn_blocking(move || inflate(&body, max)).await {
            Ok(Inflated::Body(b)) => b,
            Ok(Inflated::NotGzip) => {
                return text(StatusCode::BAD_REQUEST, "Body is not valid gzip")
            }
            Ok(Inflated::TooLarge) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Inflated body larger than {max} bytes"),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "gzip inflation task failed");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Body could not be inflated",
                );
            }
        }
    } else {
        body
    };
    take_body(logplex, &route, &body, msg_count)
}

/// What [`inflate`] made of a gzip body.
enum Inflated {
    Body(Bytes),
    NotGzip,
    TooLarge,
}

/// Inflates a gzip body, stopping one byte past `max` (no gzip bomb).
fn inflate(gz: &[u8], max: usize) -> Inflated {
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(gz).take(max as u64 + 1);
    if reader.read_to_end(&mut out).is_err() {
        return Inflated::NotGzip;
    }
    if out.len() > max {
        return Inflated::TooLarge;
    }
    Inflated::Body(Bytes::from(out))
}

fn take_body(
    logplex: &Logplex,
    route: &TokenRoute,
    body: &[u8],
    msg_count: Option<usize>,
) -> Response<Body> {
    let t = Transport::Http;
    let frames = match frame::logplex_body(body, logplex.settings().max_frame_bytes) {
        Ok(f) => f,
        Err(e) => {
            logplex.count_received(t);
            logplex.count_malformed(t);
            return text(
                StatusCode::BAD_REQUEST,
                format!("Malformed log messages: {e}"),
            );
        }
    };
    if let Some(n) = msg_count {
        if n != frames.len() {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Message count mismatch: Logplex-Msg-Count is {n}, the body holds {} frames",
                    frames.len()
                ),
            );
        }
    }
    let mut parsed = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        match message::parse(f) {
            Ok(m) => parsed.push(m),
            Err(e) => {
                logplex.count_received(t);
                logplex.count_malformed(t);
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Malformed log messages: frame {}: {e}", i + 1),
                );
            }
        }
    }
    for m in parsed {
        logplex.count_received(t);
        // With an authenticating token the route always exists.
        let _ = logplex.route(m, Some(route), t);
    }
    let mut resp = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}
