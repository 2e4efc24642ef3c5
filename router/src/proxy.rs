//! The request path: validate → look up the app → admit → choose a dyno (or
//! queue) → connect (retrying only connection set-up) → send → wait for the
//! first byte → stream the response. Every early exit maps to exactly one
//! H-code and one log line.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::affinity;
use crate::balance::{self, Unavailable};
use crate::body::{ClientFault, RequestBody, ResponseBody, RouterBody};
use crate::capacity::{self, Admission, Slot};
use crate::clock;
use crate::exchange::{End, Exchange, Facts};
use crate::hcode::{HCode, Page};
use crate::headers::{self, Forwarding};
use crate::live::ClientConn;
use crate::logline::{RouterLine, Sock};
use crate::pages;
use crate::pool::{self, ConnectError, Sender};
use crate::server::{ConnInfo, Router};
use crate::table::App;
use crate::validate;

/// A failure before the dyno's response started, with what the log needs.
struct Failure {
    code: HCode,
    sock: Option<Sock>,
    cause: Option<&'static str>,
    status: Option<u16>,
    dyno: Option<Box<str>>,
    connect_ms: Option<u64>,
    service_ms: Option<u64>,
}

impl Failure {
    fn new(code: HCode) -> Self {
        Failure {
            code,
            sock: None,
            cause: None,
            status: code.status().map(|s| s.as_u16()),
            dyno: None,
            connect_ms: None,
            service_ms: None,
        }
    }

    fn at(mut self, dyno: &Slot, connect_ms: u64, service_ms: Option<u64>) -> Self {
        self.dyno = Some(dyno.dyno().name.clone());
        self.connect_ms = Some(connect_ms);
        self.service_ms = service_ms;
        self
    }
}

/// Handles one client request. Never fails: errors become router responses.
pub async fn handle(
    router: &Arc<Router>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Response<RouterBody> {
    let start_ms = clock::epoch_ms();
    let t0 = Instant::now();

    let (host, absolute_form) = request_host(&req);
    if host.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: missing Host header\n",
        );
    }
    let table = router.routes.load();
    let Some(app) = table.lookup(&host).cloned() else {
        return page_response(
            StatusCode::NOT_FOUND,
            Bytes::from_static(pages::NO_SUCH_APP.as_bytes()),
            None,
        );
    };
    // Limits apply to what the client sent, before the router adds its own
    // forwarding headers.
    let checked = {
        let (parts, body) = req.into_parts();
        let checked = validate::check(&parts, &app.settings.limits);
        req = Request::from_parts(parts, body);
        checked
    };
    let request_id = headers::request_id(req.headers());
    let mut facts = Facts {
        app_id: app.id.clone(),
        app_name: app.name.clone(),
        metrics: app.live.metrics(&app.name),
        accepted: t0,
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
        host,
        request_id,
        fwd: String::new(),
        protocol: conn.proto,
        http_version: (req.version() == Version::HTTP_2).then_some("http2"),
        tls_version: conn.tls_version,
        queue: 0,
        wait_ms: 0,
        queued_ms: 0,
    };
    let fwd = headers::add_forwarding(
        req.headers_mut(),
        &Forwarding {
            client_ip: &conn.peer_ip,
            proto: conn.proto,
            port: conn.port,
            start_ms,
            request_id: &facts.request_id,
        },
    );
    facts.fwd = fwd;

    // H22: the connection counts against the app from its first request.
    if conn.client.get().is_none() {
        match app
            .live
            .open_client(app.settings.limits.max_client_connections)
        {
            // Concurrent HTTP/2 streams may race here; one count stands.
            Some(counted) => drop(conn.client.set(Arc::new(counted))),
            None => {
                let mut r = fail(router, &app, &facts, Failure::new(HCode::H22));
                close_after(&mut r, req.version());
                return r;
            }
        }
    }

    if let Err(r) = checked {
        let mut f = bad_request(r.cause);
        f.status = Some(r.status);
        // The unread body may hold what a smuggler hoped would pass for a
        // second request: close instead of reading on.
        let mut r = fail(router, &app, &facts, f);
        close_after(&mut r, req.version());
        return r;
    }
    // `Expect: 100-continue` is answered by the router (hyper sends `100
    // Continue` when the body is first read); the dyno never sees it.
    req.headers_mut().remove(header::EXPECT);
    if app.settings.maintenance {
        return fail(router, &app, &facts, Failure::new(HCode::H80));
    }
    if app.settings.force_https && conn.proto == "http" {
        return redirect_https(&facts);
    }
    let Some(admission) = Admission::try_new(&app) else {
        return fail(router, &app, &facts, Failure::new(HCode::H11));
    };

    // Choose a dyno and connect, retrying only connection set-up.
    let timers = app.settings.timers;
    // `max_attempts = 0` would mean no attempt at all: one is the least.
    let up = app.up_count().clamp(1, router.config.max_attempts.max(1));
    let mut attempts = 0;
    let mut connect_total = 0u64;
    let mut app = app;
    let affinity = app
        .settings
        .session_affinity
        .then(|| affinity::dyno_from_cookies(req.headers()))
        .flatten();
    let (slot, mut sender) = loop {
        let slot = match acquire(router, &mut app, t0, &mut facts, affinity.as_deref()).await {
            Ok(slot) => slot,
            Err(f) => return fail(router, &app, &facts, f),
        };
        let started = Instant::now();
        let result = checkout(router, &slot, timers.connect).await;
        connect_total += started.elapsed().as_millis() as u64;
        match result {
            Ok(sender) => break (slot, sender),
            Err(e) => {
                slot.quarantine(router.config.quarantine);
                crate::metrics::connect_failed(&app.name);
                attempts += 1;
                tracing::debug!(dyno = %slot.dyno().name, app = %app.name, error = ?e, "connect failed");
                if attempts >= up {
                    let code = match e {
                        ConnectError::Timeout => HCode::H19,
                        ConnectError::Refused(_) => HCode::H21,
                    };
                    let f = Failure::new(code).at(&slot, connect_total, None);
                    return fail(router, &app, &facts, f);
                }
            }
        }
    };

    // Build the request the dyno sees.
    let client_version = req.version();
    let upgrade = client_version == Version::HTTP_11 && is_upgrade(req.headers());
    let on_client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    if absolute_form || !parts.headers.contains_key(header::HOST) {
        if let Ok(v) = HeaderValue::from_str(&facts.host) {
            parts.headers.insert(header::HOST, v);
        }
    }
    parts.version = Version::HTTP_11;
    // Dynos get origin-form; only absolute-form (and HTTP/2's) URIs need
    // rebuilding.
    if parts.uri.scheme().is_some()
        || parts.uri.authority().is_some()
        || parts.uri.path_and_query().is_none()
    {
        parts.uri = match parts.uri.path_and_query() {
            Some(pq) => pq
                .as_str()
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("/")),
            None => http::Uri::from_static("/"),
        };
    }
    let (body, progress) = RequestBody::new(body, app.settings.limits.max_body);
    let upstream = Request::from_parts(parts, body);

    // Send, and wait for the first byte under the H12 / H28 timers.
    let sent_at = Instant::now();
    // Time in the queue counts toward the request timeout; waiting for a
    // dyno to boot or leave quarantine has its own timer (H20 / H99).
    let waited = Duration::from_millis(facts.queued_ms);
    let response = {
        let fut = sender.send_request(upstream);
        tokio::pin!(fut);
        loop {
            let deadline = match progress.done_at() {
                Some(done) => clock::instant_at(done) + timers.first_byte.saturating_sub(waited),
                None => clock::instant_at(progress.last_activity()) + timers.idle,
            };
            tokio::select! {
                r = &mut fut => break r,
                _ = progress.notify.notified() => {
                    if progress.fault().is_some() {
                        // Let the request future report the client's failure.
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let service = Some(sent_at.elapsed().as_millis() as u64);
                    let now = Instant::now();
                    match progress.done_at() {
                        Some(done) if now >= clock::instant_at(done) + timers.first_byte.saturating_sub(waited) => {
                            let f = Failure::new(HCode::H12).at(&slot, connect_total, service);
                            return fail(router, &app, &facts, f);
                        }
                        None if now >= clock::instant_at(progress.last_activity()) + timers.idle => {
                            let f = Failure::new(HCode::H28).at(&slot, connect_total, service);
                            return fail(router, &app, &facts, f);
                        }
                        _ => continue,
                    }
                }
                _ = router.forcing() => {
                    let mut f = Failure::new(HCode::H24).at(&slot, connect_total, Some(sent_at.elapsed().as_millis() as u64));
                    f.status = None;
                    return fail(router, &app, &facts, f);
                }
            }
        }
    };
    let service = Some(sent_at.elapsed().as_millis() as u64);
    let mut response = match response {
        Ok(r) => r,
        Err(e) => {
            let f = match progress.fault() {
                Some(ClientFault::Gone) => {
                    let mut f = Failure::new(HCode::H27);
                    f.sock = Some(Sock::Client);
                    f
                }
                Some(ClientFault::BadBody) => bad_request("bad chunk"),
                Some(ClientFault::TooLarge) => {
                    let mut f = bad_request("request body too large");
                    f.status = Some(413);
                    f
                }
                None => Failure::new(response_error_code(&e)),
            };
            tracing::debug!(app = %app.name, dyno = %slot.dyno().name, error = %e, "dyno request failed");
            return fail(router, &app, &facts, f.at(&slot, connect_total, service));
        }
    };

    let status = response.status();
    let is_switch = status == StatusCode::SWITCHING_PROTOCOLS;
    let on_dyno_upgrade = (upgrade && is_switch).then(|| hyper::upgrade::on(&mut response));
    let (mut parts, body) = response.into_parts();
    headers::prepare_response(&mut parts.headers, &facts.request_id, is_switch && upgrade);
    if let (Some(age), "https") = (app.settings.hsts_max_age, conn.proto) {
        if !parts
            .headers
            .contains_key(header::STRICT_TRANSPORT_SECURITY)
        {
            if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
                parts.headers.insert(header::STRICT_TRANSPORT_SECURITY, v);
            }
        }
    }
    parts.version = client_version;
    let mut exchange = Box::new(Exchange {
        router: router.clone(),
        bytes: headers::head_len(&parts.headers),
        facts,
        admission: Some(admission),
        slot: Some(slot),
        sender: Some(sender),
        client: conn.watch.clone(),
        connect_ms: connect_total,
        started: sent_at,
        status: status.as_u16(),
    });
    if let (Some(client), Some(dyno)) = (on_client_upgrade, on_dyno_upgrade) {
        exchange.sender = None;
        let counted = conn.client.get().cloned();
        tokio::spawn(pipe(
            client,
            dyno,
            exchange,
            app.settings.timers.idle,
            counted,
        ));
        return Response::from_parts(parts, RouterBody::Empty);
    }
    if app.settings.session_affinity {
        let chosen = exchange.slot.as_ref().map(|s| s.dyno().name.clone());
        if let Some(chosen) = chosen.filter(|c| affinity.as_deref() != Some(&**c)) {
            affinity::set_cookie(&mut parts.headers, &chosen);
        }
    }
    conn.watch.arm(app.settings.timers.idle);
    let body = ResponseBody::new(body, app.settings.timers.idle, exchange);
    Response::from_parts(parts, RouterBody::Proxied(body))
}

/// Takes a dyno slot for the request, waiting in the app's queue, for a
/// booting dyno, or out a quarantine, as the situation calls for. Time spent
/// waiting is added to `facts.wait_ms`; `app` becomes the snapshot the slot
/// was taken from (newer than the request's own after a publication).
async fn acquire(
    router: &Arc<Router>,
    app: &mut Arc<App>,
    t0: Instant,
    facts: &mut Facts,
    affinity: Option<&str>,
) -> Result<Slot, Failure> {
    let timers = app.settings.timers;
    loop {
        // Create the change notification before looking, so none is missed.
        let changed = router.routes.changed();
        match balance::unavailable(app) {
            None => {}
            Some(Unavailable::NoWebDynos) => return Err(Failure::new(HCode::H14)),
            Some(Unavailable::AllCrashed) => return Err(Failure::new(HCode::H10)),
            Some(reason) => {
                let deadline = t0 + timers.boot;
                let code = if reason == Unavailable::Starting {
                    HCode::H20
                } else {
                    HCode::H99
                };
                if Instant::now() >= deadline {
                    return Err(Failure::new(code));
                }
                // Starting dynos come up by publication; quarantines end on
                // their own. Look again at whichever comes first.
                let waiting_from = Instant::now();
                let quarantine_end = capacity::next_quarantine_end(app);
                let timed_out = tokio::select! {
                    _ = changed => false,
                    _ = sleep_until_some(quarantine_end) => false,
                    _ = tokio::time::sleep_until(deadline) => true,
                };
                facts.wait_ms += waiting_from.elapsed().as_millis() as u64;
                if timed_out {
                    return Err(Failure::new(code));
                }
                let table = router.routes.load();
                match table.lookup(&facts.host) {
                    Some(fresh) => *app = fresh.clone(),
                    None => return Err(Failure::new(HCode::H14)),
                }
                continue;
            }
        }
        let mut ticket = match capacity::claim(app, affinity) {
            Ok(slot) => return Ok(slot),
            Err(ticket) => ticket,
        };
        facts.queue = ticket.position;
        let queued_at = Instant::now();
        let deadline = t0 + timers.first_byte;
        let got = tokio::select! {
            slot = &mut ticket => slot,
            _ = tokio::time::sleep_until(deadline) => None,
            _ = router.forcing() => None,
        };
        let queued_ms = queued_at.elapsed().as_millis() as u64;
        facts.wait_ms += queued_ms;
        facts.queued_ms += queued_ms;
        // A slot may have been handed over just as the timer fired.
        if let Some(slot) = got.or_else(|| ticket.try_take()) {
            *app = slot.app().clone();
            return Ok(slot);
        }
        // Dropping the ticket leaves the queue.
        drop(ticket);
        let mut f = Failure::new(if router.is_forcing() {
            HCode::H24
        } else {
            HCode::H12
        });
        if f.code == HCode::H24 {
            f.status = None;
        }
        return Err(f);
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A pooled connection to the slot's dyno, or a new one.
async fn checkout(router: &Router, slot: &Slot, timeout: Duration) -> Result<Sender, ConnectError> {
    let dyno = slot.dyno();
    while let Some(mut sender) = dyno.live.pool.checkout(router.config.pool_idle) {
        if sender.ready().await.is_ok() {
            return Ok(sender);
        }
    }
    pool::connect(dyno.address, timeout).await
}

/// Which host a request is for, and whether it named it in an HTTP/1
/// absolute-form target (`GET http://a.example/ HTTP/1.1`). Such a target
/// wins over `Host` (RFC 9112 §3.2.2), and the dyno is then sent that host.
/// Otherwise HTTP/1 names it in exactly one `Host`, HTTP/2 in `:authority`
/// (or `Host`). Empty when none is given.
fn request_host<B>(req: &Request<B>) -> (String, bool) {
    let authority = req
        .uri()
        .authority()
        // The userinfo part (`user@`) is no part of the host.
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default());
    let absolute_form = req.version() != Version::HTTP_2 && req.uri().scheme().is_some();
    let host = match (authority, req.headers().get(header::HOST)) {
        (Some(a), _) if absolute_form => a.to_string(),
        (_, Some(h)) => h.to_str().unwrap_or("").to_string(),
        (Some(a), None) => a.to_string(),
        (None, None) => String::new(),
    };
    (host, absolute_form)
}

fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Maps a dyno-side failure before any response byte to its H-code.
fn response_error_code(e: &hyper::Error) -> HCode {
    if e.is_parse() || e.is_parse_status() {
        // hyper reports conflicting or malformed response lengths as parse
        // errors; those are Heroku's H25 "HTTP restriction".
        let text = e.to_string();
        if text.contains("content-length") || text.contains("too large") {
            HCode::H25
        } else {
            HCode::H17
        }
    } else if e.is_parse_too_large() {
        HCode::H25
    } else {
        HCode::H13
    }
}

fn bad_request(cause: &'static str) -> Failure {
    let mut f = Failure::new(HCode::H26);
    f.cause = Some(cause);
    f
}

/// Logs `f` for the app and builds the client's response.
fn fail(router: &Arc<Router>, app: &App, facts: &Facts, f: Failure) -> Response<RouterBody> {
    let line = RouterLine {
        code: Some(f.code),
        sock: f.sock,
        cause: f.cause,
        dyno: f.dyno.as_deref(),
        connect_ms: f.connect_ms,
        service_ms: f.service_ms,
        status: f.status,
        bytes: None,
        ..facts.line()
    };
    router.emit(facts, Some(f.code), &line);
    let status = f
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match f.code.page() {
        Page::Error => {
            let page = app
                .settings
                .error_page_url
                .as_deref()
                .and_then(|u| router.pages.get_or_fetch(u))
                .unwrap_or_else(|| Bytes::from_static(pages::APPLICATION_ERROR.as_bytes()));
            page_response(status, page, Some(&facts.request_id))
        }
        Page::Maintenance => {
            let page = app
                .settings
                .maintenance_page_url
                .as_deref()
                .and_then(|u| router.pages.get_or_fetch(u))
                .unwrap_or_else(|| Bytes::from_static(pages::MAINTENANCE.as_bytes()));
            page_response(status, page, Some(&facts.request_id))
        }
        Page::Plain => {
            let msg = format!(
                "{}: {}\n",
                status.canonical_reason().unwrap_or("Error"),
                f.cause.unwrap_or("bad request")
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
    }
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

fn page_response(
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

fn plain(status: StatusCode, msg: impl Into<Bytes>) -> Response<RouterBody> {
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

fn redirect_https(facts: &Facts) -> Response<RouterBody> {
    let host = facts.host.split(':').next().unwrap_or(&facts.host);
    let location = format!("https://{host}{}", facts.path);
    let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    insert_request_id(&mut r, &facts.request_id);
    r
}

/// After `101 Switching Protocols`: a byte pipe between client and dyno
/// until either side closes, the idle window passes, or the router shuts
/// down. The log line is written when the pipe ends (`service=` is the whole
/// session, as Heroku logs it). The client connection stays counted
/// against the app (H22) while the pipe runs.
async fn pipe(
    client: hyper::upgrade::OnUpgrade,
    dyno: hyper::upgrade::OnUpgrade,
    exchange: Box<Exchange>,
    idle: Duration,
    _counted: Option<Arc<ClientConn>>,
) {
    use hyper_util::rt::TokioIo;
    let (client, dyno) = match tokio::try_join!(client, dyno) {
        Ok(pair) => pair,
        Err(_) => return exchange.finish(End::DynoBroke),
    };
    let mut client = TokioIo::new(client);
    let mut dyno = TokioIo::new(dyno);
    let router = exchange.router.clone();
    let mut exchange = exchange;
    let end = tokio::select! {
        r = crate::splice::copy_bidirectional_idle(&mut client, &mut dyno, idle) => match r {
            Ok((_, to_client)) => {
                exchange.bytes += to_client;
                End::Complete
            }
            Err(crate::splice::SpliceError::DynoIdle(to_client)) => {
                exchange.bytes += to_client;
                End::DynoIdle
            }
            // A dyno that takes no byte for the idle window is as good as
            // silent (H15); a client that takes none has gone (H27).
            Err(crate::splice::SpliceError::Stalled(side, to_client)) => {
                exchange.bytes += to_client;
                match side {
                    crate::splice::End::Dyno => End::DynoIdle,
                    crate::splice::End::Client => End::ClientGone,
                }
            }
            Err(crate::splice::SpliceError::Io(_)) => End::DynoBroke,
        },
        _ = router.forcing() => End::ClientGone,
    };
    exchange.finish(end);
}
