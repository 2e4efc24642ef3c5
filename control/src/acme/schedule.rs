//! When each domain is ordered: the `acm_status` values, the renewal
//! point, the back-off, and the plan over the whole state. Pure functions
//! of the records and a time, so they are tested without a CA or a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{key, AppRecord, CertRecord, DomainAcm, DomainRecord};
use crate::state::State;

/// The `acm_status` values (Heroku's).
pub mod status {
    /// Waiting for an order.
    pub const PENDING: &str = "pending";
    /// A certificate is served.
    pub const ISSUED: &str = "cert issued";
    /// The last order failed; it will be tried again.
    pub const FAILING: &str = "failing";
    /// Given up until a refresh.
    pub const FAILED: &str = "failed";
}

/// The ACM state a domain of `app` starts in: `pending` when the app has
/// ACM on and the name is not a wildcard (HTTP-01 cannot prove those).
pub fn wanted(app: &AppRecord, hostname: &str) -> Option<DomainAcm> {
    (app.acm && !hostname.starts_with("*.")).then(|| DomainAcm {
        status: status::PENDING.into(),
        ..DomainAcm::default()
    })
}

/// When a certificate valid from `starts` to `expires` is renewed: at two
/// thirds of its lifetime.
pub fn renew_at(starts: DateTime<Utc>, expires: DateTime<Utc>) -> DateTime<Utc> {
    starts + (expires - starts) * 2 / 3
}

/// How long to wait after the `attempts`-th failed order in a row:
/// `first`, doubling, at most a day.
pub fn backoff(first: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    first
        .saturating_mul(factor)
        .min(Duration::from_secs(86_400))
}

/// When a domain is next ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Now.
    Now,
    /// Not before then.
    At(DateTime<Utc>),
    /// Not until someone asks (failed, or ACM off).
    Never,
}

pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When the domain with state `acm`, served by ACM certificate `cert`
/// (if any), is next ordered by node `me`, as of `now`.
pub fn due(acm: &DomainAcm, cert: Option<&CertRecord>, me: &str, now: DateTime<Utc>) -> Due {
    let when = match acm.status.as_str() {
        status::PENDING => Due::Now,
        status::FAILING => match acm.retry_at.as_deref().and_then(parse_time) {
            Some(t) if t > now => Due::At(t),
            _ => Due::Now,
        },
        status::ISSUED => {
            let renew = cert.and_then(|c| {
                Some(renew_at(
                    parse_time(&c.starts_at)?,
                    parse_time(&c.expires_at)?,
                ))
            });
            match renew {
                Some(t) if t > now => Due::At(t),
                _ => Due::Now,
            }
        }
        _ => Due::Never,
    };
    // Another node's live claim defers the domain until it lapses.
    let claimed = acm
        .claimed_until
        .as_deref()
        .and_then(parse_time)
        .filter(|until| *until > now && acm.orderer.as_deref() != Some(me));
    match (when, claimed) {
        (Due::Never, _) => Due::Never,
        (Due::Now, Some(until)) => Due::At(until),
        (Due::At(t), Some(until)) => Due::At(t.max(until)),
        (when, None) => when,
    }
}

/// The ACM certificate serving `hostname`, if any.
pub(crate) fn acm_cert<'a>(certs: &'a [CertRecord], hostname: &str) -> Option<&'a CertRecord> {
    certs
        .iter()
        .find(|c| c.acm && c.cert_domains.iter().any(|n| n == hostname))
}

/// One domain to order: app id, domain id, hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// App id.
    pub app_id: String,
    /// Domain record id.
    pub domain_id: String,
    /// The name to certify.
    pub hostname: String,
}

/// Every domain due now, and the earliest later time one is due.
/// O(apps with ACM on).
pub fn plan(state: &State, me: &str, now: DateTime<Utc>) -> (Vec<Work>, Option<DateTime<Utc>>) {
    let mut work = Vec::new();
    let mut next: Option<DateTime<Utc>> = None;
    // Only the apps with ACM on (`acm/<app>`), not every app.
    let apps = state
        .entries("acm/")
        .filter_map(|(k, _)| state.get::<AppRecord>(&key::app(k.strip_prefix("acm/")?)));
    for app in apps.filter(|a| a.acm) {
        let certs: Vec<CertRecord> = state.list(&key::under("certs", &app.id));
        for d in state.list::<DomainRecord>(&key::under("domains", &app.id)) {
            let Some(acm) = &d.acm else { continue };
            match due(acm, acm_cert(&certs, &d.hostname), me, now) {
                Due::Now => work.push(Work {
                    app_id: app.id.clone(),
                    domain_id: d.id.clone(),
                    hostname: d.hostname.clone(),
                }),
                Due::At(t) => next = Some(next.map_or(t, |n| n.min(t))),
                Due::Never => {}
            }
        }
    }
    (work, next)
}

/// `t` as the store keeps times (RFC 3339, whole seconds).
pub(crate) fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("time")
    }

    fn state(status: &str) -> DomainAcm {
        DomainAcm {
            status: status.into(),
            ..DomainAcm::default()
        }
    }

    fn cert(starts: &str, expires: &str) -> CertRecord {
        let mut c = crate::api::certs::blank("c".into(), true);
        c.starts_at = starts.into();
        c.expires_at = expires.into();
        c
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        // Let's Encrypt's 90 days: renewed on day 60.
        let c = cert("2026-01-01T00:00:00Z", "2026-04-01T00:00:00Z");
        let issued = state(status::ISSUED);
        assert_eq!(
            renew_at(t(&c.starts_at), t(&c.expires_at)),
            t("2026-03-02T00:00:00Z")
        );
        let day59 = t("2026-03-01T00:00:00Z");
        assert_eq!(
            due(&issued, Some(&c), "me", day59),
            Due::At(t("2026-03-02T00:00:00Z"))
        );
        assert_eq!(
            due(&issued, Some(&c), "me", t("2026-03-02T00:00:01Z")),
            Due::Now
        );
        // Issued but its certificate is gone (removed by hand): order again.
        assert_eq!(due(&issued, None, "me", day59), Due::Now);
    }

    #[test]
    fn failures_back_off_doubling_and_failed_waits_for_a_refresh() {
        let first = Duration::from_secs(60);
        assert_eq!(backoff(first, 1), Duration::from_secs(60));
        assert_eq!(backoff(first, 2), Duration::from_secs(120));
        assert_eq!(backoff(first, 3), Duration::from_secs(240));
        assert_eq!(backoff(first, 40), Duration::from_secs(86_400));
        let now = t("2026-01-01T00:00:00Z");
        let failing = DomainAcm {
            retry_at: Some("2026-01-01T00:02:00Z".into()),
            attempts: 2,
            ..state(status::FAILING)
        };
        assert_eq!(
            due(&failing, None, "me", now),
            Due::At(t("2026-01-01T00:02:00Z"))
        );
        assert_eq!(
            due(&failing, None, "me", t("2026-01-01T00:02:00Z")),
            Due::Now
        );
        assert_eq!(due(&state(status::FAILED), None, "me", now), Due::Never);
        assert_eq!(due(&state(status::PENDING), None, "me", now), Due::Now);
    }

    #[test]
    fn another_nodes_live_claim_defers_the_order_until_it_lapses() {
        let now = t("2026-01-01T00:00:00Z");
        let claimed = DomainAcm {
            orderer: Some("other".into()),
            claimed_until: Some("2026-01-01T00:10:00Z".into()),
            ..state(status::PENDING)
        };
        assert_eq!(
            due(&claimed, None, "me", now),
            Due::At(t("2026-01-01T00:10:00Z"))
        );
        // The claimant itself carries on; a lapsed claim binds no one.
        assert_eq!(due(&claimed, None, "other", now), Due::Now);
        assert_eq!(
            due(&claimed, None, "me", t("2026-01-01T00:10:01Z")),
            Due::Now
        );
    }

    #[test]
    fn only_apps_with_acm_and_their_non_wildcard_domains_are_wanted() {
        let mut app = AppRecord {
            id: "a".into(),
            name: "demo".into(),
            created_at: crate::model::now(),
            updated_at: crate::model::now(),
            released_at: None,
            maintenance: false,
            session_affinity: false,
            preboot: false,
            acm: false,
            router: Default::default(),
        };
        assert_eq!(wanted(&app, "www.example.com"), None);
        app.acm = true;
        assert_eq!(
            wanted(&app, "www.example.com").map(|a| a.status),
            Some(status::PENDING.to_string())
        );
        assert_eq!(wanted(&app, "*.example.com"), None);
    }
}
