//! The request path, in four phases, each returning a typed [`Failed`] that
//! [`crate::failure::rescue`] maps to an H-code at the edge (`reply::fail`):
//!
//! 1. **route and admit** ([`handle`], `screen`): find the app by host,
//!    check the request's limits, the client-connection cap, maintenance;
//!    forward it to the app's owner when another router owns the app
//!    ([`crate::forward`]); then the app's in-flight bound (H11);
//! 2. **acquire and connect** (`connect`): take a dyno slot (waiting in the
//!    app's queue, for a boot or out a quarantine as needed) and a
//!    connection, retrying only connection set-up on another dyno;
//! 3. **send and wait for the first byte** (`send`) under the request
//!    (H12) and client idle (H28) timers;
//! 4. **respond** (`respond`): stream the dyno's response, or hand an
//!    upgrade to the byte pipe. Failures after this point end the exchange
//!    (H15, H18, H27, H28; see [`crate::exchange`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::affinity;
use crate::balance::{self, Unavailable};
use crate::body::{ClientFault, Progress, RequestBody, ResponseBody, RouterBody};
use crate::capacity::{self, Admission, Slot};
use crate::clock;
use crate::exchange::{Exchange, Facts};
use crate::failure::Failed;
use crate::forward::{self, Arrival, Trip};
use crate::headers;
use crate::pages;
use crate::pool::{self, ConnectError, Sender};
use crate::reply::{self, Failure};
use crate::server::{ConnInfo, Router};
use crate::table::App;
use crate::upstream::{self, DynoBody};
use crate::validate;

/// The client's socket after an upgrade ([`ConnInfo::on_upgrade`]).
type ClientUpgrade = tokio::sync::oneshot::Receiver<crate::connection::UpgradedClient>;

/// Handles one client request. Never fails: errors become router responses.
pub async fn handle(
    router: &Arc<Router>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
) -> Response<RouterBody> {
    let start_ms = clock::epoch_ms();
    let t0 = Instant::now();

    // Phase 1: route and admit.
    let (host, absolute_form) = request_host(&req);
    if host.is_empty() {
        return reply::plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: missing Host header\n",
        );
    }
    let table = router.routes.load();
    let Some(app) = table.lookup(&host).cloned() else {
        return reply::page_response(
            StatusCode::NOT_FOUND,
            Bytes::from_static(pages::NO_SUCH_APP.as_bytes()),
            None,
        );
    };
    // ACME HTTP-01 validation (RFC 8555 §8.3) comes over plain HTTP and is
    // answered here, before maintenance, HTTPS redirects or any dyno.
    if conn.proto == "http" && req.method() == http::Method::GET {
        if let Some(answer) = app.acme_answer(req.uri().path()) {
            return reply::plain(StatusCode::OK, answer.to_string());
        }
    }
    // Forwarded by another router, or from a client.
    let arrival = Arrival::of(router, conn, req.headers_mut());
    let (trusted, proto) = (arrival.trusted, arrival.proto);
    // Limits apply to what the client sent, before the router adds its own
    // forwarding headers.
    let checked = validate::check(&req, &app.settings.limits);
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
        request_id: headers::request_id(req.headers()),
        fwd: String::new(),
        protocol: proto,
        http_version: (req.version() == Version::HTTP_2).then_some("http2"),
        tls_version: conn.tls_version,
        queue: 0,
        wait_ms: 0,
        queued_ms: 0,
        forwarded_by: None,
        forwarded_to: None,
        start_ms,
        port: conn.port,
        sets_forwarding: !trusted,
    };
    if trusted {
        // The first router set them; the request id is already its own.
        facts.fwd = headers::forwarded_for(req.headers());
        facts.forwarded_by = arrival.hop.as_ref().map(|h| h.by.clone());
    } else {
        // Written into the head the dyno gets (`Facts::forwarding`).
        facts.fwd = headers::forwarded_for_chain(req.headers(), &conn.peer_ip);
    }
    let version = req.version();
    // The first router screened a forwarded request; its pooled connection
    // is no client connection of the app's.
    let screened = if trusted {
        if app.settings.maintenance {
            Err(Failed::Maintenance)
        } else {
            Ok(())
        }
    } else {
        screen(conn, &app, checked)
    };
    if let Err(failed) = screened {
        return reply::fail(router, &app, &facts, failed.into(), version);
    }
    // `Expect: 100-continue` is answered by the router (hyper sends `100
    // Continue` when the body is first read); the dyno never sees it.
    req.headers_mut().remove(header::EXPECT);
    if app.settings.force_https && proto == "http" {
        return reply::redirect_https(&facts);
    }
    let upgrade = version == Version::HTTP_11 && is_upgrade(req.headers());
    // Another router owns the app: its queue is the app's queue.
    if let Some(peer) = forward::owner_elsewhere(router, &app, upgrade) {
        let trip = Trip {
            peer,
            absolute_form,
            version,
            t0,
        };
        // Boxed: held inline, the forwarding future would grow every
        // request's future, forwarded or not (measured: +4,700
        // instructions a request from the extra copies).
        match Box::pin(forward::to_owner(
            router, conn, &app, facts, req, &arrival, trip,
        ))
        .await
        {
            Ok(response) => return response,
            Err(back) => (req, facts) = back,
        }
    }
    let Some(admission) = Admission::try_new(&app) else {
        return reply::fail(router, &app, &facts, Failed::QueueFull.into(), version);
    };

    // Phase 2: acquire a slot and connect.
    let mut app = app;
    let affinity = app
        .settings
        .session_affinity
        .then(|| affinity::dyno_from_cookies(req.headers()))
        .flatten();
    let connected = match connect(router, &mut app, t0, &mut facts, affinity.as_deref()).await {
        Ok(connected) => connected,
        Err(f) => return reply::fail(router, &app, &facts, f, version),
    };

    // Phase 3: send, and wait for the first byte.
    let on_client_upgrade = upgrade.then(|| conn.on_upgrade());
    let Connected {
        slot,
        sender,
        connect_ms,
        at,
    } = connected;
    let (upstream, progress) = upstream_request(req, &app, &facts, absolute_form, upgrade, at);
    let response = match send(
        router,
        conn,
        &app,
        &facts,
        sender,
        upstream,
        &progress,
        Duration::ZERO,
        at,
    )
    .await
    {
        Ok(response) => response,
        Err((failed, service_ms)) => {
            let f = Failure::new(failed).at(&slot, connect_ms, Some(service_ms));
            return reply::fail(router, &app, &facts, f, version);
        }
    };

    // Phase 4: respond.
    let exchange = Box::new(Exchange {
        router: router.clone(),
        bytes: 0,
        facts,
        admission: Some(admission),
        slot: Some(slot),
        sender: None,
        peer: None,
        client: conn.watch.clone(),
        connect_ms,
        started: at,
        status: response.status().as_u16(),
    });
    let mut response = respond(
        conn,
        proto,
        &app,
        response,
        exchange,
        on_client_upgrade,
        affinity.as_deref(),
        version,
    );
    if trusted {
        // What the forwarding router subtracts to measure its overhead.
        let us = t0.elapsed().as_micros() as u64;
        response
            .headers_mut()
            .insert(forward::OWNER_TIME, HeaderValue::from(us));
    }
    response
}

/// The checks that answer before any dyno is involved: the request's own
/// limits, the app's client-connection cap (H22), maintenance (H80).
fn screen(conn: &ConnInfo, app: &App, checked: Result<(), validate::Reject>) -> Result<(), Failed> {
    // H22: the connection counts against the app from its first request.
    if conn.client.get().is_none() {
        match app
            .live
            .open_client(app.settings.limits.max_client_connections)
        {
            // Concurrent HTTP/2 streams may race here; one count stands.
            Some(counted) => drop(conn.client.set(Arc::new(counted))),
            None => return Err(Failed::TooManyConnections),
        }
    }
    // The unread body of a rejected request may hold what a smuggler hoped
    // would pass for a second request: the rescue closes the connection.
    checked.map_err(|r| Failed::BadRequest {
        status: r.status,
        cause: r.cause,
    })?;
    if app.settings.maintenance {
        return Err(Failed::Maintenance);
    }
    Ok(())
}

/// A dyno slot and a connection to its dyno.
struct Connected {
    slot: Slot,
    sender: Sender,
    /// Time spent connecting over all attempts, ms.
    connect_ms: u64,
    /// When the connection was ready: the request is sent from here.
    at: Instant,
}

/// Takes a slot and a connection, retrying connection set-up on another
/// dyno (quarantining the one that failed) up to the attempt limit.
async fn connect(
    router: &Arc<Router>,
    app: &mut Arc<App>,
    t0: Instant,
    facts: &mut Facts,
    affinity: Option<&str>,
) -> Result<Connected, Failure> {
    let timeout = app.settings.timers.connect;
    // `max_attempts = 0` would mean no attempt at all: one is the least.
    let attempts = app.up_count().clamp(1, router.config.max_attempts.max(1));
    let mut connect_ms = 0u64;
    let mut attempt = 0;
    loop {
        let slot = acquire(router, app, t0, facts, affinity).await?;
        let started = Instant::now();
        let result = checkout(router, &slot, timeout, started).await;
        // A pooled connection was ready when the clock was read above.
        let ready = match &result {
            Ok((_, true)) => started,
            _ => Instant::now(),
        };
        connect_ms += ready.saturating_duration_since(started).as_millis() as u64;
        let failed = match result {
            Ok((sender, _)) => {
                return Ok(Connected {
                    slot,
                    sender,
                    connect_ms,
                    at: ready,
                })
            }
            Err(e) => {
                tracing::debug!(dyno = %slot.dyno().name, app = %app.name, error = ?e, "connect failed");
                match e {
                    ConnectError::Timeout => Failed::ConnectTimeout,
                    ConnectError::Refused(_) => Failed::ConnectRefused,
                }
            }
        };
        slot.quarantine(router.config.quarantine);
        crate::metrics::connect_failed(&app.name);
        attempt += 1;
        if !failed.retryable() || attempt >= attempts {
            return Err(Failure::new(failed).at(&slot, connect_ms, None));
        }
    }
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
) -> Result<Slot, Failed> {
    let timers = app.settings.timers;
    loop {
        // Create the change notification before looking, so none is missed.
        let changed = router.routes.changed();
        let failed = match balance::unavailable(app) {
            None => None,
            Some(Unavailable::NoWebDynos) => return Err(Failed::NoWebDynos),
            Some(Unavailable::AllCrashed) => return Err(Failed::AllCrashed),
            Some(Unavailable::Starting) => Some(Failed::BootTimeout),
            Some(Unavailable::Quarantined) => Some(Failed::Quarantined),
        };
        if let Some(failed) = failed {
            let deadline = t0 + timers.boot;
            if Instant::now() >= deadline {
                return Err(failed);
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
                return Err(failed);
            }
            let table = router.routes.load();
            match table.lookup(&facts.host) {
                Some(fresh) => *app = fresh.clone(),
                None => return Err(Failed::NoWebDynos),
            }
            continue;
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
        return Err(if router.is_forcing() {
            Failed::ShuttingDown
        } else {
            Failed::QueueTimeout
        });
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A connection to the slot's dyno, and whether it came from the pool
/// (idle-timed at `now`).
async fn checkout(
    router: &Router,
    slot: &Slot,
    timeout: Duration,
    now: Instant,
) -> Result<(Sender, bool), ConnectError> {
    let dyno = slot.dyno();
    if let Some(sender) = dyno.live.pool.checkout(router.config.pool_idle, now) {
        return Ok((sender, true));
    }
    Ok((pool::connect(dyno.address, timeout).await?, false))
}

/// The request the dyno sees: hop-by-hop headers stripped, `Host` set,
/// HTTP/1.1 in origin form, the body counted against the app's limit.
/// (Inlined: the request is large, and moving it in and out of a call
/// costs memory copies on every request.)
#[inline(always)]
pub(crate) fn upstream_request(
    req: Request<Incoming>,
    app: &App,
    facts: &Facts,
    absolute_form: bool,
    upgrade: bool,
    at: Instant,
) -> (Request<RequestBody>, Arc<Progress>) {
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
    let (body, progress) = RequestBody::new(body, app.settings.limits.max_body, clock::ms_at(at));
    (Request::from_parts(parts, body), progress)
}

/// Sends the request and waits for the response head: the request timer
/// (less the time already spent in the queue) runs once the body is sent,
/// the idle window while it is being sent. `slack` lengthens the request
/// timer (a forwarding router gives the owner's own timer room to fire
/// first). The request counts as sent at `sent_at` (the caller's clock
/// read). On failure, the failure and the time since sending, ms.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    router: &Router,
    conn: &ConnInfo,
    app: &App,
    facts: &Facts,
    sender: Sender,
    upstream: Request<RequestBody>,
    progress: &Progress,
    slack: Duration,
    sent_at: Instant,
) -> Result<Response<DynoBody>, (Failed, u64)> {
    let timers = app.settings.timers;
    let since_sent = || sent_at.elapsed().as_millis() as u64;
    // Time in the queue counts toward the request timeout; waiting for a
    // dyno to boot or leave quarantine has its own timer (H20 / H99).
    let first_byte = timers
        .first_byte
        .saturating_sub(Duration::from_millis(facts.queued_ms))
        + slack;
    let fut = upstream::round_trip(sender, upstream, facts.forwarding(), timers.connect, || {
        crate::metrics::stale_retry(&app.name)
    });
    tokio::pin!(fut);
    let deadline = |progress: &Progress| match progress.done_at() {
        Some(done) => clock::instant_at(done) + first_byte,
        None => clock::instant_at(progress.last_activity()) + timers.idle,
    };
    let mut timer = conn.timer.take(deadline(progress));
    let result = loop {
        timer.as_mut().reset(deadline(progress));
        let sending = progress.done_at().is_none();
        tokio::select! {
            r = &mut fut => break r,
            // Woken when the body ends or fails; a client fault is
            // reported by the request future itself.
            _ = progress.notify.notified(), if sending => continue,
            _ = timer.as_mut() => {
                let now = Instant::now();
                match progress.done_at() {
                    Some(done) if now >= clock::instant_at(done) + first_byte => {
                        return Err((Failed::FirstByteTimeout, since_sent()));
                    }
                    None if now >= clock::instant_at(progress.last_activity()) + timers.idle => {
                        return Err((Failed::ClientIdle, since_sent()));
                    }
                    // The body moved or ended since the deadline was set.
                    _ => continue,
                }
            }
            _ = cut_off(router, facts.http_version.is_some()) => {
                return Err((Failed::ShuttingDown, since_sent()));
            }
        }
    };
    conn.timer.put(timer);
    match result {
        Ok(response) => Ok(response),
        Err(e) => {
            let failed = match progress.fault() {
                Some(ClientFault::Gone) => Failed::ClientGone,
                Some(ClientFault::BadBody) => Failed::BadChunk,
                Some(ClientFault::TooLarge) => Failed::BodyTooLarge,
                None => Failed::from_dyno_error(&e),
            };
            tracing::debug!(app = %app.name, error = %e, "dyno request failed");
            Err((failed, since_sent()))
        }
    }
}

/// Resolves when shutdown's grace period runs out. An HTTP/1 request is
/// polled by its client connection's task, which waits for that moment
/// itself and then drives the connection again (`connection::h1_session`),
/// so the request only reads a flag; registering with the shutdown token
/// cost every request a lock and a waiter. An HTTP/2 stream runs in a task
/// of its own (`own_task`) and registers to be woken.
fn cut_off(router: &Router, own_task: bool) -> impl std::future::Future<Output = ()> + '_ {
    use futures_util::future::Either;
    if own_task {
        Either::Left(router.forcing())
    } else {
        Either::Right(std::future::poll_fn(move |_| {
            if router.is_forcing() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }))
    }
}

/// Turns the dyno's response into the client's: Heroku's header rules, HSTS,
/// the affinity cookie, and a body streamed under the idle window; or, after
/// `101 Switching Protocols` on an upgrade, the byte pipe.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn respond(
    conn: &ConnInfo,
    proto: &str,
    app: &App,
    response: Response<DynoBody>,
    mut exchange: Box<Exchange>,
    on_client_upgrade: Option<ClientUpgrade>,
    affinity: Option<&str>,
    client_version: Version,
) -> Response<RouterBody> {
    let is_switch = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = on_client_upgrade.is_some();
    let (mut parts, mut body) = response.into_parts();
    headers::prepare_response(
        &mut parts.headers,
        &exchange.facts.request_id,
        is_switch && upgrade,
    );
    if let (Some(age), "https") = (app.settings.hsts_max_age, proto) {
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
    exchange.bytes = headers::head_len(&parts.headers);
    let on_dyno_upgrade = (upgrade && is_switch)
        .then(|| body.into_upgraded())
        .flatten();
    if let (Some(client), Some(dyno)) = (on_client_upgrade, on_dyno_upgrade) {
        exchange.sender = None;
        let counted = conn.client.get().cloned();
        tokio::spawn(crate::splice::pipe(
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
        if let Some(chosen) = chosen.filter(|c| affinity != Some(&**c)) {
            affinity::set_cookie(&mut parts.headers, &chosen);
        }
    }
    conn.watch.arm(app.settings.timers.idle);
    let body = ResponseBody::new(body, app.settings.timers.idle, exchange);
    Response::from_parts(parts, RouterBody::Proxied(body))
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
