//! Dyno choice: which web dyno takes the next request.
//!
//! Only web dynos in state `up` and not quarantined are eligible, and only
//! while they hold fewer requests than the app's `max_dyno_concurrency`.
//! The default mode, least-outstanding, scans every dyno for the smallest
//! in-flight count when there are few of them and uses the power of two
//! random choices when there are many; `random` and `round-robin` exist to
//! compare with Heroku and nginx.
//!
//! This is policy only: the slot it takes is wrapped, given back and handed
//! on to queued requests by [`crate::capacity`].

use std::sync::atomic::Ordering;

use rand::Rng;

use crate::settings::Balance;
use crate::table::{App, Dyno, DynoState};

/// Up to this many dynos, least-outstanding is an exact scan.
const EXACT_SCAN: usize = 8;

fn eligible(d: &Dyno) -> bool {
    d.state == DynoState::Up && !d.live.is_quarantined()
}

/// Chooses an eligible dyno with spare concurrency, per the app's balancing
/// mode, and counts one more request on it; returns its index in `app.web`.
/// `None` when every eligible dyno is full (or none exists). The count is
/// given back by [`crate::capacity::Slot`], which wraps the index.
pub(crate) fn choose(app: &App) -> Option<usize> {
    let limit = app.settings.max_dyno_concurrency.max(1);
    let dynos = &app.web;
    let n = dynos.len();
    if n == 0 {
        return None;
    }
    let take = |index: usize| dynos[index].live.try_acquire(limit).then_some(index);
    match app.settings.balance {
        Balance::LeastOutstanding => {
            if n > EXACT_SCAN {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let pick = match (eligible(&dynos[a]), eligible(&dynos[b])) {
                    (true, true) if dynos[b].live.in_flight() < dynos[a].live.in_flight() => {
                        Some(b)
                    }
                    (true, _) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => None,
                };
                if let Some(index) = pick.and_then(take) {
                    return Some(index);
                }
            }
            // Exact scan, starting at a rotating offset so ties spread.
            loop {
                let start = app.live.cursor.fetch_add(1, Ordering::Relaxed) as usize;
                let best = (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| eligible(&dynos[i]))
                    .map(|i| (dynos[i].live.in_flight(), i))
                    .filter(|&(load, _)| load < limit)
                    .min_by_key(|&(load, _)| load)?;
                if let Some(index) = take(best.1) {
                    return Some(index);
                }
                // Lost a race for that slot; look again.
            }
        }
        Balance::Random => {
            let start = rand::rng().random_range(0..n);
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| eligible(&dynos[i]))
                .find_map(take)
        }
        Balance::RoundRobin => {
            let start = app.live.cursor.fetch_add(1, Ordering::Relaxed) as usize;
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| eligible(&dynos[i]))
                .find_map(take)
        }
    }
}

/// Counts one more request on the dyno named `name` if it is eligible and
/// has spare concurrency (session affinity); returns its index.
pub(crate) fn take_named(app: &App, name: &str) -> Option<usize> {
    let limit = app.settings.max_dyno_concurrency.max(1);
    let index = app.web.iter().position(|d| &*d.name == name)?;
    let dyno = &app.web[index];
    (eligible(dyno) && dyno.live.try_acquire(limit)).then_some(index)
}

/// Why no dyno can take a request right now, beyond "all busy".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No web dyno that is up or starting: H14.
    NoWebDynos,
    /// Every web dyno is crashed: H10.
    AllCrashed,
    /// None up, some starting: wait for boot (H20 after the boot timeout).
    Starting,
    /// Up dynos exist but all are quarantined: wait (H99 after the boot timeout).
    Quarantined,
}

/// Classifies an app with no eligible dyno; `None` when some dyno is eligible
/// (so the request should queue for a slot).
pub fn unavailable(app: &App) -> Option<Unavailable> {
    let mut any = false;
    let (mut up, mut starting, mut crashed, mut free) = (0, 0, 0, 0);
    for d in app.web.iter() {
        match d.state {
            DynoState::Up => {
                up += 1;
                if !d.live.is_quarantined() {
                    free += 1;
                }
            }
            DynoState::Starting => starting += 1,
            DynoState::Crashed => crashed += 1,
            DynoState::Down => continue,
        }
        any = true;
    }
    if free > 0 {
        None
    } else if up > 0 {
        Some(Unavailable::Quarantined)
    } else if starting > 0 {
        Some(Unavailable::Starting)
    } else if crashed > 0 && any {
        Some(Unavailable::AllCrashed)
    } else {
        Some(Unavailable::NoWebDynos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::try_choose;
    use crate::table::{AppSpec, RouteTable};
    use crate::AppSettings;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn app(n: usize, limit: u32, balance: Balance) -> Arc<App> {
        let mut spec = AppSpec::new("demo").settings(AppSettings {
            max_dyno_concurrency: limit,
            balance,
            ..AppSettings::default()
        });
        for i in 1..=n {
            spec = spec.dyno(
                format!("web.{i}"),
                SocketAddr::from(([127, 0, 0, 1], i as u16)),
            );
        }
        let t = RouteTable::builder().app(spec).build().expect("table");
        t.app("demo").expect("app").clone()
    }

    #[test]
    fn least_outstanding_spreads_then_fills_to_the_limit() {
        for n in [2, 8, 50] {
            let a = app(n, 2, Balance::LeastOutstanding);
            let mut slots = Vec::new();
            for _ in 0..n {
                slots.push(try_choose(&a).expect("slot"));
            }
            if n <= EXACT_SCAN {
                assert!(
                    a.web.iter().all(|d| d.live.in_flight() == 1),
                    "one each first (n={n})"
                );
            }
            for _ in 0..n {
                slots.push(try_choose(&a).expect("slot"));
            }
            assert!(try_choose(&a).is_none(), "all at limit");
            drop(slots);
            assert!(a.web.iter().all(|d| d.live.in_flight() == 0));
        }
    }

    #[test]
    fn modes_skip_full_quarantined_and_non_up_dynos() {
        for mode in [
            Balance::Random,
            Balance::RoundRobin,
            Balance::LeastOutstanding,
        ] {
            let a = app(3, 1, mode);
            a.web[0].live.quarantine(std::time::Duration::from_secs(60));
            let s1 = try_choose(&a).expect("slot");
            let s2 = try_choose(&a).expect("slot");
            assert!(try_choose(&a).is_none());
            assert_ne!(s1.dyno().name, s2.dyno().name);
            assert_eq!(a.web[0].live.in_flight(), 0);
        }
    }

    #[test]
    fn unavailable_classifies() {
        let t = RouteTable::builder()
            .app(AppSpec::new("none"))
            .app(AppSpec::new("crashed").dyno_in(
                "web.1",
                "127.0.0.1:1".parse().expect("addr"),
                DynoState::Crashed,
            ))
            .app(AppSpec::new("booting").dyno_in(
                "web.1",
                "127.0.0.1:1".parse().expect("addr"),
                DynoState::Starting,
            ))
            .app(AppSpec::new("down").dyno_in(
                "web.1",
                "127.0.0.1:1".parse().expect("addr"),
                DynoState::Down,
            ))
            .build()
            .expect("table");
        let u = |n: &str| unavailable(t.app(n).expect("app"));
        assert_eq!(u("none"), Some(Unavailable::NoWebDynos));
        assert_eq!(u("crashed"), Some(Unavailable::AllCrashed));
        assert_eq!(u("booting"), Some(Unavailable::Starting));
        assert_eq!(u("down"), Some(Unavailable::NoWebDynos));
    }
}
