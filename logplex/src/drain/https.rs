//! `https://` drains: batches of octet-counted frames POSTed as
//! `application/logplex-1`, the way Logplex does.
//!
//! Frames are `<len> <pri>1 <ts> host <app|heroku> <process> - <msg>\n`
//! (Heroku's shape: literal `host`, no structured-data field; each frame
//! ends in `\n` so newline-splitting receivers work). Headers:
//! `Content-Type: application/logplex-1`, `Logplex-Msg-Count` (L10 line
//! included), `Logplex-Frame-Id` (32 hex digits, the same on every retry of
//! a batch), `Logplex-Drain-Token`, `User-Agent: Logplex/…`, and Basic auth
//! from the URL's user info. 2xx: delivered; 4xx other than 429: dropped
//! (counted, reported); anything else or a transport error: retried with
//! jittered backoff up to `https_max_attempts` tries, then dropped.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::timeout;
use url::Url;

use super::{Batch, Ctx};

/// `User-Agent` of HTTPS drains.
pub const USER_AGENT: &str = concat!("Logplex/v1 (Switchyard ", env!("CARGO_PKG_VERSION"), ")");

/// Encodes a batch (L10 line first); returns the body and its frame count.
pub fn encode(ctx: &Ctx, batch: &Batch) -> (Bytes, usize) {
    let l10 = ctx.loss_line(batch);
    let mut out = Vec::with_capacity(batch.frames_bound(l10.as_ref(), "host"));
    let mut count = 0;
    if let Some(l10) = l10 {
        l10.write_frame("host", false, &mut out);
        count += 1;
    }
    for line in &batch.lines {
        line.write_frame("host", false, &mut out);
        count += 1;
    }
    (Bytes::from(out), count)
}

enum Outcome {
    Delivered,
    Refused(StatusCode),
    Retry(String),
}

struct Endpoint {
    url: Url,
    host: String,
    port: u16,
    authority: String,
    path: String,
    auth: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Endpoint {
    fn new(url: Url, tls: Option<Arc<rustls::ClientConfig>>) -> Option<Self> {
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port_or_known_default()?;
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str()?),
            None => url.host_str()?.to_string(),
        };
        let mut path = url.path().to_string();
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            Some(format!("Basic {creds}"))
        };
        Some(Self {
            url,
            host,
            port,
            authority,
            path,
            auth,
            tls,
        })
    }

    async fn connect(&self, ctx: &Ctx) -> Result<SendRequest<Full<Bytes>>, String> {
        let limit = ctx.settings.drain_connect_timeout;
        let tcp = timeout(limit, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = timeout(limit, connector.connect(name, tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(stream).await
            }
            None => handshake(tcp).await,
        }
    }

    fn request(
        &self,
        ctx: &Ctx,
        body: Bytes,
        count: usize,
        frame_id: &str,
    ) -> Option<Request<Full<Bytes>>> {
        let mut req = Request::post(self.path.as_str())
            .header(header::HOST, self.authority.as_str())
            .header(header::CONTENT_TYPE, "application/logplex-1")
            .header(header::USER_AGENT, USER_AGENT)
            .header("Logplex-Msg-Count", count)
            .header("Logplex-Frame-Id", frame_id)
            .header("Logplex-Drain-Token", ctx.token.as_str());
        if let Some(auth) = &self.auth {
            req = req.header(header::AUTHORIZATION, auth.as_str());
        }
        req.body(Full::new(body)).ok()
    }
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn send_once(
    ctx: &Ctx,
    endpoint: &Endpoint,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    req: Request<Full<Bytes>>,
) -> Outcome {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        match endpoint.connect(ctx).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return Outcome::Retry(e),
        }
    }
    let Some(sender) = conn.as_mut() else {
        return Outcome::Retry("no connection".into());
    };
    let exchange = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        // Read the (small) answer so the connection can be reused.
        resp.into_body().collect().await?;
        Ok::<_, hyper::Error>(status)
    };
    match timeout(ctx.settings.drain_send_timeout, exchange).await {
        Ok(Ok(status)) if status.is_success() => Outcome::Delivered,
        Ok(Ok(status)) if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS => {
            Outcome::Refused(status)
        }
        Ok(Ok(status)) => Outcome::Retry(format!("status {status}")),
        Ok(Err(e)) => {
            *conn = None;
            Outcome::Retry(e.to_string())
        }
        Err(_) => {
            *conn = None;
            Outcome::Retry("request timed out".into())
        }
    }
}

/// The sender task of one HTTPS drain; ends when the buffer closes.
pub async fn run(ctx: Arc<Ctx>, url: Url, tls: Option<Arc<rustls::ClientConfig>>) {
    let Some(endpoint) = Endpoint::new(url, tls) else {
        tracing::warn!(drain = %ctx.id, "https drain URL has no usable host");
        while let Some(batch) = ctx.buffer.next(ctx.settings.https_batch_bytes).await {
            ctx.failed(batch);
        }
        return;
    };
    let mut conn = None;
    while let Some(batch) = ctx.buffer.next(ctx.settings.https_batch_bytes).await {
        let (body, count) = encode(&ctx, &batch);
        let frame_id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(req) = endpoint.request(&ctx, body.clone(), count, &frame_id) else {
                ctx.failed(batch);
                break;
            };
            match send_once(&ctx, &endpoint, &mut conn, req).await {
                Outcome::Delivered => {
                    ctx.delivered(batch);
                    break;
                }
                Outcome::Refused(status) => {
                    tracing::warn!(drain = %ctx.id, url = %super::redacted_url(endpoint.url.as_str()), %status, "https drain refused a batch; dropped");
                    ctx.failed(batch);
                    break;
                }
                Outcome::Retry(why) => {
                    if attempt >= ctx.settings.https_max_attempts.max(1) {
                        tracing::warn!(drain = %ctx.id, url = %super::redacted_url(endpoint.url.as_str()), why = %super::clipped(&why), attempt, "https drain gave up on a batch; dropped");
                        ctx.failed(batch);
                        break;
                    }
                    tokio::time::sleep(ctx.backoff(attempt)).await;
                }
            }
        }
    }
}
