//! The responses the router writes itself: a failure's page (and its one
//! log line), plain errors and the HTTPS redirect.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};

use crate::body::RouterBody;
use crate::capacity::Slot;
use crate::exchange::Facts;
use crate::failure::{self, Failed};
use crate::hcode::Page;
use crate::headers;
use crate::logline::RouterLine;
use crate::pages;
use crate::server::Router;
use crate::table::App;

/// A failure with where it happened, for the log line.
#[derive(Debug)]
pub(crate) struct Failure {
    /// What went wrong.
    pub failed: Failed,
    /// The dyno tried, if one was.
    pub dyno: Option<Box<str>>,
    /// Time spent connecting, ms, once a connect was tried.
    pub connect_ms: Option<u64>,
    /// Time since the request was sent, ms, once it was.
    pub service_ms: Option<u64>,
}

impl Failure {
    /// A failure before any dyno was tried.
    pub fn new(failed: Failed) -> Self {
        Failure {
            failed,
            dyno: None,
            connect_ms: None,
            service_ms: None,
        }
    }

    /// The same failure, on `slot`'s dyno.
    pub fn at(mut self, slot: &Slot, connect_ms: u64, service_ms: Option<u64>) -> Self {
        self.dyno = Some(slot.dyno().name.clone());
        self.connect_ms = Some(connect_ms);
        self.service_ms = service_ms;
        self
    }
}

impl From<Failed> for Failure {
    fn from(failed: Failed) -> Self {
        Failure::new(failed)
    }
}

/// Logs `f` for the app and builds the client's response (a request of
/// HTTP `version`).
pub(crate) fn fail(
    router: &Arc<Router>,
    app: &App,
    facts: &Facts,
    f: Failure,
    version: Version,
) -> Response<RouterBody> {
    let rescue = failure::rescue(f.failed);
    let line = RouterLine {
        code: Some(rescue.code),
        sock: rescue.sock,
        cause: rescue.cause,
        dyno: f.dyno.as_deref(),
        connect_ms: f.connect_ms,
        service_ms: f.service_ms,
        status: rescue.status,
        bytes: None,
        ..facts.line()
    };
    router.emit(facts, Some(rescue.code), &line);
    let status = rescue
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    // The app's own page when it has one and it was fetched, else ours.
    let page = |url: &Option<String>, default: &'static str| {
        let page = url
            .as_deref()
            .and_then(|u| router.pages.get_or_fetch(u))
            .unwrap_or_else(|| Bytes::from_static(default.as_bytes()));
        page_response(status, page, Some(&facts.request_id))
    };
    let mut r = match rescue.code.page() {
        Page::Error => page(&app.settings.error_page_url, pages::APPLICATION_ERROR),
        Page::Maintenance => page(&app.settings.maintenance_page_url, pages::MAINTENANCE),
        Page::Plain => {
            let msg = format!(
                "{}: {}\n",
                status.canonical_reason().unwrap_or("Error"),
                rescue.cause.unwrap_or("bad request")
            );
            let mut r = plain(status, msg);
            insert_request_id(&mut r, &facts.request_id);
            r
        }
        Page::None => {
            let mut r = plain(status, "");
            insert_request_id(&mut r, &facts.request_id);
            r
        }
    };
    if rescue.close {
        close_after(&mut r, version);
    }
    r
}

/// Asks hyper to close an HTTP/1 connection once `r` is written (HTTP/2
/// has no such header; its streams are framed and cannot be smuggled).
fn close_after(r: &mut Response<RouterBody>, version: Version) {
    if version != Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

fn insert_request_id(r: &mut Response<RouterBody>, id: &str) {
    if let Ok(v) = headers::request_id_value(id) {
        r.headers_mut().insert(&headers::X_REQUEST_ID, v);
    }
}

pub(crate) fn page_response(
    status: StatusCode,
    page: Bytes,
    request_id: Option<&str>,
) -> Response<RouterBody> {
    let mut r = Response::new(RouterBody::full(page));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store"),
    );
    headers::append_via(h);
    if let Some(id) = request_id {
        insert_request_id(&mut r, id);
    }
    r
}

pub(crate) fn plain(status: StatusCode, msg: impl Into<Bytes>) -> Response<RouterBody> {
    let mut r = Response::new(RouterBody::full(msg.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers::append_via(h);
    r
}

pub(crate) fn redirect_https(facts: &Facts) -> Response<RouterBody> {
    let host = facts.host.split(':').next().unwrap_or(&facts.host);
    let location = format!("https://{host}{}", facts.path);
    let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    insert_request_id(&mut r, &facts.request_id);
    r
}
