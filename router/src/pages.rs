//! The pages the router serves itself: application error, maintenance and
//! "no such app", plus apps' own pages from `ERROR_PAGE_URL` and
//! `MAINTENANCE_PAGE_URL`.
//!
//! Custom pages are fetched over `http://` or `https://` in the background
//! the first time an app needs one, and cached by URL; until the fetch
//! lands (or while it fails) the default page is served. A cached page is
//! fetched again once it is [`RouterConfig::page_refresh`] old, and served
//! as it was until the new copy lands (or for good, if the refresh fails);
//! a URL that failed is tried again after `page_refresh` or 30 s, whichever
//! is sooner. A healthy request never touches this module.
//!
//! [`RouterConfig::page_refresh`]: crate::RouterConfig::page_refresh

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};

/// Served with H10–H25 and H99.
pub const APPLICATION_ERROR: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Application Error</title></head>\n<body><h1>Application Error</h1>\n<p>An error occurred in the application and your page could not be served. If you are the application owner, check your logs for details.</p></body></html>\n";

/// Served with H80.
pub const MAINTENANCE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Offline for Maintenance</title></head>\n<body><h1>Offline for Maintenance</h1>\n<p>This app is undergoing maintenance right now. Please check back later.</p></body></html>\n";

/// Served with 404 for an unknown host.
pub const NO_SUCH_APP: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>No such app</title></head>\n<body><h1>No such app</h1>\n<p>There is no app configured at that hostname.</p></body></html>\n";

/// Largest custom page accepted.
const MAX_PAGE: usize = 512 * 1024;

/// Longest wait before a URL that failed is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// One fetch may take this long, connect to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Cached custom pages by URL.
#[derive(Debug)]
pub struct PageCache {
    pages: Mutex<HashMap<String, Entry>>,
    refresh: Duration,
    /// Trust for `https://` pages; `None`: the Web PKI roots, set up only
    /// when such a page is fetched.
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug)]
struct Entry {
    /// The last page fetched, if any fetch has worked.
    page: Option<Bytes>,
    /// When the last fetch ended; `None` before the first one has.
    checked: Option<Instant>,
    fetching: bool,
}

impl PageCache {
    /// A cache that fetches again after `refresh`, trusting `tls` for
    /// `https://` URLs (the Web PKI roots when `None`).
    pub fn new(refresh: Duration, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        PageCache {
            pages: Mutex::default(),
            refresh,
            tls,
        }
    }

    /// The page at `url` if one was fetched; starts a fetch first when
    /// there is none yet or the copy is due for a refresh.
    pub fn get_or_fetch(self: &Arc<Self>, url: &str) -> Option<Bytes> {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pages.entry(url.to_string()).or_insert(Entry {
            page: None,
            checked: None,
            fetching: false,
        });
        let due = match entry.page {
            None => self.refresh.min(RETRY_AFTER),
            Some(_) => self.refresh,
        };
        if !entry.fetching && entry.checked.is_none_or(|at| at.elapsed() >= due) {
            entry.fetching = true;
            let cache = self.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                let fetched = fetch(&url, cache.tls.as_ref()).await;
                let mut pages = cache.pages.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(entry) = pages.get_mut(&url) {
                    entry.fetching = false;
                    entry.checked = Some(Instant::now());
                    match fetched {
                        Ok(body) => entry.page = Some(body),
                        Err(e) => {
                            tracing::warn!(url = %url, error = %e, "custom error page fetch failed")
                        }
                    }
                }
            });
        }
        entry.page.clone()
    }
}

/// Trusts the Web PKI roots, as browsers would for the same URL.
fn web_pki_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup: {e}"))?;
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// Fetches a page: `http://` or `https://host[:port]/path`.
async fn fetch(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let secure = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("only http:// and https:// page URLs are fetched".into()),
    };
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let work = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        if !secure {
            return get(stream, &host, path).await;
        }
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("bad host for TLS: {e}"))?
            .to_owned();
        let tls = match tls {
            Some(tls) => tls.clone(),
            None => web_pki_client()?,
        };
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(stream, &host, path).await
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// One `GET` over an open connection; the body if the status is 2xx.
async fn get<S>(stream: S, host: &str, path: &str) -> Result<Bytes, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_PAGE)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes())
}
