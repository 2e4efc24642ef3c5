//! The pages the router serves itself: application error, maintenance and
//! "no such app", plus apps' own pages from `ERROR_PAGE_URL` and
//! `MAINTENANCE_PAGE_URL`.
//!
//! Custom pages are fetched once, in the background, the first time an app
//! needs one, and cached by URL; until the fetch lands (or if it fails) the
//! default page is served. A healthy request never touches this module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Served with H10–H25 and H99.
pub const APPLICATION_ERROR: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Application Error</title></head>\n<body><h1>Application Error</h1>\n<p>An error occurred in the application and your page could not be served. If you are the application owner, check your logs for details.</p></body></html>\n";

/// Served with H80.
pub const MAINTENANCE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Offline for Maintenance</title></head>\n<body><h1>Offline for Maintenance</h1>\n<p>This app is undergoing maintenance right now. Please check back later.</p></body></html>\n";

/// Served with 404 for an unknown host.
pub const NO_SUCH_APP: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>No such app</title></head>\n<body><h1>No such app</h1>\n<p>There is no app configured at that hostname.</p></body></html>\n";

/// Largest custom page accepted.
const MAX_PAGE: usize = 512 * 1024;

/// Cached custom pages by URL.
#[derive(Debug, Default)]
pub struct PageCache {
    pages: Mutex<HashMap<String, Option<Bytes>>>,
}

impl PageCache {
    /// The page at `url` if fetched; otherwise starts one fetch and returns `None`.
    pub fn get_or_fetch(self: &Arc<Self>, url: &str) -> Option<Bytes> {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        match pages.get(url) {
            Some(page) => page.clone(),
            None => {
                pages.insert(url.to_string(), None);
                let cache = self.clone();
                let url = url.to_string();
                tokio::spawn(async move {
                    match fetch(&url).await {
                        Ok(body) => {
                            let mut pages = cache.pages.lock().unwrap_or_else(|e| e.into_inner());
                            pages.insert(url, Some(body));
                        }
                        Err(e) => {
                            tracing::warn!(url = %url, error = %e, "custom error page fetch failed")
                        }
                    }
                });
                None
            }
        }
    }
}

/// Fetches a page over plain HTTP (`http://host[:port]/path`).
async fn fetch(url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// page URLs are fetched".into());
    }
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let work = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let req = http::Request::get(path)
            .header(http::header::HOST, host.as_str())
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
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "timed out".to_string())?
}
