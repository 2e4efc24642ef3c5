//! App-owner routing: with many routers, each app's requests wait in one
//! router's queue, so least-outstanding choice sees every request in flight
//! to the app's dynos wherever it arrived.
//!
//! One live router *owns* each app (the binary picks it by rendezvous
//! hashing over the routers registered in etcd and answers through
//! [`Owners`]). A router that is not the owner forwards the request, after
//! its own admission checks (limits, maintenance, HTTPS redirect), to the
//! owner's plain HTTP listener over pooled HTTP/1.1 connections, adding
//! [`HOP`] (`X-Switchyard-Hop: N; by=ID`). The owner takes the forwarding
//! headers the first router set (`X-Forwarded-*`, `X-Request-Start`,
//! `X-Request-Id`) as the request's own when the hop comes from a live
//! router's address ([`Owners::trusts`]), queues it in the app's FIFO like
//! any other, and logs the one router line (`forwarded_by=ID`; `queue=` and
//! `wait=` are the owner's queue). The dyno never sees [`HOP`].
//!
//! # Failures
//! - The owner refuses the connection or does not accept it within
//!   [`crate::RouterConfig::forward_connect`]: nothing was sent, so the
//!   request is routed here (`outcome="fallback"`). This is the window
//!   between an owner's death and its lease's expiry.
//! - Once the request is sent, failures are final, as with a dyno: an owner
//!   that dies mid-request takes the requests it held (H13 / H18 here).
//! - A request whose hop count has reached [`crate::RouterConfig::hop_limit`]
//!   and that this router would forward again (routers whose views of the
//!   member set disagree) is answered with H99 (`outcome="hop_limit"`): no
//!   request is forwarded in a loop.
//! - Upgrades (WebSocket) are routed where they arrive: their byte pipe has
//!   no queue to share.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use metrics::{counter, histogram, Counter, Histogram};
use tokio::time::Instant;

use crate::body::{ResponseBody, RouterBody};
use crate::exchange::{Exchange, Facts};
use crate::headers;
use crate::pool::{self, ConnectError, Pool, Sender};
use crate::proxy;
use crate::reply::{self, Failure};
use crate::server::{ConnInfo, Router};
use crate::table::App;

/// How much longer than the app's request timeout a forwarding router
/// waits for the owner's response head: the owner's own timer, started a
/// little later, fires first and answers H12 itself.
const OWNER_SLACK: Duration = Duration::from_secs(1);

/// The hop header: `N; by=ID`, the number of routers the request passed
/// through before this one, and the id of the last.
pub const HOP: HeaderName = HeaderName::from_static("x-switchyard-hop");

/// On a response to a forwarded request: the owner's time from accepting
/// the request to sending the response head, in microseconds. The
/// forwarding router subtracts it from its own to measure what forwarding
/// added, and strips it.
pub const OWNER_TIME: HeaderName = HeaderName::from_static("x-switchyard-owner-us");

/// Another router, as a forwarding target.
#[derive(Debug)]
pub struct Peer {
    /// Its member id (what `forwarded_by=` shows on its lines).
    pub id: Arc<str>,
    /// Its plain HTTP listener.
    pub address: SocketAddr,
    /// Idle keep-alive connections to it; dropped with the peer when it
    /// leaves the member set.
    pub pool: Arc<Pool>,
}

impl Peer {
    /// A peer with an empty pool.
    pub fn new(id: impl Into<Arc<str>>, address: SocketAddr) -> Self {
        Peer {
            id: id.into(),
            address,
            pool: Arc::new(Pool::default()),
        }
    }
}

/// Who owns which app. Called once per request: an implementation must not
/// lock (the binary's is an `ArcSwap` load and a rendezvous over the live
/// routers).
pub trait Owners: Send + Sync + fmt::Debug {
    /// The owner of the app with id `app_id` when it is another router;
    /// `None` when this router routes the app itself (it owns it, or
    /// ownership is unknown).
    fn owner(&self, app_id: &str) -> Option<Arc<Peer>>;
    /// Whether a request from `ip` may carry forwarding headers set by a
    /// router (it comes from a live router's address).
    fn trusts(&self, ip: IpAddr) -> bool;
    /// This router's id, sent as `by=` in [`HOP`].
    fn id(&self) -> &str;
}

/// A parsed [`HOP`] header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Routers passed through before this one.
    pub count: u8,
    /// The last of them.
    pub by: Box<str>,
}

impl Hop {
    /// Parses `N; by=ID`; a malformed value counts as one hop from an
    /// unknown router, so it can only shorten a loop, never extend it.
    pub fn parse(value: &HeaderValue) -> Hop {
        let text = value.to_str().unwrap_or_default();
        let (count, by) = text.split_once(';').unwrap_or((text, ""));
        let by = by.trim().strip_prefix("by=").unwrap_or("?").trim();
        Hop {
            count: count.trim().parse().unwrap_or(1).max(1),
            by: if by.is_empty() { "?".into() } else { by.into() },
        }
    }

    /// Takes the hop header out of `headers` (the dyno never sees it).
    pub fn take(headers: &mut HeaderMap) -> Option<Hop> {
        headers.remove(&HOP).map(|v| Hop::parse(&v))
    }

    /// The header value for the next hop, sent by router `by`.
    pub fn next_value(count: u8, by: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("{count}; by={by}"))
            .unwrap_or_else(|_| HeaderValue::from(u16::from(count)))
    }
}

/// What became of a request this router would forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The owner answered.
    Forwarded,
    /// The owner could not be reached before sending: routed here.
    Fallback,
    /// Sent, and failed on the way (the owner died or went silent).
    Failed,
    /// The hop limit was reached: answered with H99.
    HopLimit,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Forwarded,
        Outcome::Fallback,
        Outcome::Failed,
        Outcome::HopLimit,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Fallback => "fallback",
            Outcome::Failed => "failed",
            Outcome::HopLimit => "hop_limit",
        }
    }
}

/// `router_forwarded_requests_total{outcome}`, resolved once.
pub(crate) fn count(outcome: Outcome) {
    static COUNTERS: OnceLock<[Counter; 4]> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        Outcome::ALL.map(|o| counter!("router_forwarded_requests_total", "outcome" => o.as_str()))
    });
    counters[outcome as usize].increment(1);
}

/// `router_forward_overhead_seconds`: what forwarding added to a request's
/// time to its response head (this router's time less the owner's).
pub(crate) fn record_overhead(total: Duration, headers: &mut HeaderMap) {
    static OVERHEAD: OnceLock<Histogram> = OnceLock::new();
    let owner_us = headers
        .remove(&OWNER_TIME)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(us) = owner_us {
        let added = total.saturating_sub(Duration::from_micros(us));
        OVERHEAD
            .get_or_init(|| histogram!("router_forward_overhead_seconds"))
            .record(added.as_secs_f64());
    }
}

/// A connection to `peer`: its pool's, or a new one within `timeout`.
pub(crate) async fn checkout(
    peer: &Peer,
    pool_idle: Duration,
    timeout: Duration,
) -> Result<Sender, ConnectError> {
    if let Some(sender) = peer.pool.checkout(pool_idle, Instant::now()) {
        return Ok(sender);
    }
    pool::connect(peer.address, timeout).await
}

/// How a request arrived: from a client, or forwarded by another router.
#[derive(Debug)]
pub(crate) struct Arrival {
    /// Its hop header, taken out of the request (the dyno never sees it).
    pub hop: Option<Hop>,
    /// The hop came from a live router's address: the forwarding headers
    /// that router set stand as the request's own.
    pub trusted: bool,
    /// `http` or `https`, as the client used it.
    pub proto: &'static str,
}

impl Arrival {
    /// Takes the hop header out of `headers`: its count always counts,
    /// its router's forwarding headers only from a live router's address.
    pub(crate) fn of(router: &Router, conn: &ConnInfo, headers: &mut HeaderMap) -> Arrival {
        let hop = Hop::take(headers);
        let trusted = hop.is_some()
            && router
                .config
                .owners
                .as_ref()
                .is_some_and(|o| o.trusts(conn.peer.ip()));
        let proto = if trusted {
            headers::forwarded_proto(headers)
        } else {
            conn.proto
        };
        Arrival {
            hop,
            trusted,
            proto,
        }
    }

    /// Routers the request passed through before this one.
    fn hops(&self) -> u8 {
        self.hop.as_ref().map_or(0, |h| h.count)
    }
}

/// The owner of `app` when it is another router and the request may go
/// there (upgrades stay where they arrive).
pub(crate) fn owner_elsewhere(router: &Router, app: &App, upgrade: bool) -> Option<Arc<Peer>> {
    if upgrade {
        return None;
    }
    router.config.owners.as_ref()?.owner(&app.id)
}

/// A request on its way to its app's owner.
pub(crate) struct Trip {
    /// The owner.
    pub peer: Arc<Peer>,
    /// Whether the client named the host in an absolute-form target.
    pub absolute_form: bool,
    /// The client's HTTP version.
    pub version: Version,
    /// When this router accepted the request.
    pub t0: Instant,
}

/// Forwards the request to `trip.peer`, its app's owner: answers H99 at
/// the hop limit; gives the request back (with its facts) when the owner
/// cannot be reached before anything is sent, to be routed here.
pub(crate) async fn to_owner(
    router: &Arc<Router>,
    conn: &ConnInfo,
    app: &App,
    facts: Facts,
    req: Request<Incoming>,
    arrival: &Arrival,
    trip: Trip,
) -> Result<Response<RouterBody>, (Request<Incoming>, Facts)> {
    let hops = arrival.hops();
    if hops >= router.config.hop_limit {
        count(Outcome::HopLimit);
        let failed = crate::failure::Failed::HopLimit.into();
        return Ok(reply::fail(router, app, &facts, failed, trip.version));
    }
    let (idle, timeout) = (router.config.pool_idle, router.config.forward_connect);
    match checkout(&trip.peer, idle, timeout).await {
        Ok(sender) => Ok(relay(router, conn, app, facts, req, trip, sender, hops + 1).await),
        Err(e) => {
            // Nothing was sent: this router routes it after all.
            tracing::debug!(owner = %trip.peer.id, app = %app.name, error = ?e, "owner unreachable; routing here");
            count(Outcome::Fallback);
            Err((req, facts))
        }
    }
}

/// Forwards the request to its app's owner over `sender` and streams the
/// owner's response back. The owner writes the request's line; this
/// router writes one only for a failure on the way (`forwarded_to=`).
#[allow(clippy::too_many_arguments)]
async fn relay(
    router: &Arc<Router>,
    conn: &ConnInfo,
    app: &App,
    mut facts: Facts,
    req: Request<Incoming>,
    trip: Trip,
    sender: Sender,
    hops: u8,
) -> Response<RouterBody> {
    let Trip {
        peer,
        absolute_form,
        version,
        t0,
    } = trip;
    let sent_at = Instant::now();
    let (mut upstream, progress) =
        proxy::upstream_request(req, app, &facts, absolute_form, false, sent_at);
    let by = router.config.owners.as_ref().map_or("?", |o| o.id());
    upstream
        .headers_mut()
        .insert(HOP, Hop::next_value(hops, by));
    facts.forwarded_to = Some(peer.id.clone());
    let sent = proxy::send(
        router,
        conn,
        app,
        &facts,
        sender,
        upstream,
        &progress,
        OWNER_SLACK,
        sent_at,
    )
    .await;
    let response = match sent {
        Ok(response) => response,
        Err((failed, service_ms)) => {
            count(Outcome::Failed);
            let mut f = Failure::new(failed);
            f.service_ms = Some(service_ms);
            return reply::fail(router, app, &facts, f, version);
        }
    };
    count(Outcome::Forwarded);
    let (mut parts, body) = response.into_parts();
    record_overhead(t0.elapsed(), &mut parts.headers);
    // The owner prepared the head for the client (Via, X-Request-Id,
    // HSTS); only this hop's own connection headers go.
    headers::strip_hop_by_hop(&mut parts.headers, false);
    parts.version = version;
    let exchange = Box::new(Exchange {
        router: router.clone(),
        bytes: headers::head_len(&parts.headers),
        status: parts.status.as_u16(),
        facts,
        admission: None,
        slot: None,
        sender: None,
        peer: Some(peer),
        client: conn.watch.clone(),
        connect_ms: 0,
        started: sent_at,
    });
    let idle = app.settings.timers.idle;
    conn.watch.arm(idle);
    let body = ResponseBody::new(body, idle, exchange);
    Response::from_parts(parts, RouterBody::Proxied(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_values_round_trip_and_bad_ones_count_as_a_hop() {
        let v = Hop::next_value(2, "10.0.0.7:8080");
        assert_eq!(v, "2; by=10.0.0.7:8080");
        assert_eq!(
            Hop::parse(&v),
            Hop {
                count: 2,
                by: "10.0.0.7:8080".into()
            }
        );
        for bad in ["", "x", "0", "-3; by=", "; by=a"] {
            let hop = Hop::parse(&HeaderValue::from_static(bad));
            assert!(hop.count >= 1, "{bad:?} -> {hop:?}");
        }
        assert_eq!(Hop::parse(&HeaderValue::from_static("7")).by.as_ref(), "?");
    }
}
