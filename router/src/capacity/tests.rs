//! Every way a queued request is woken, and every way it leaves.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::settings::AppSettings;
use crate::table::{AppSpec, RouteTable, Routes, TableUpdate};

fn spec(dynos: &[(&str, DynoState)], limit: u32) -> AppSpec {
    let mut spec = AppSpec::new("demo").settings(AppSettings {
        max_dyno_concurrency: limit,
        ..AppSettings::default()
    });
    for (name, state) in dynos {
        let port: u16 = name.trim_start_matches("web.").parse().expect("n");
        spec = spec.dyno_in(*name, SocketAddr::from(([127, 0, 0, 1], port)), *state);
    }
    spec
}

fn routes(dynos: &[(&str, DynoState)], limit: u32) -> Routes {
    Routes::new(
        RouteTable::builder()
            .app(spec(dynos, limit))
            .build()
            .expect("table"),
    )
}

fn publish(routes: &Routes, dynos: &[(&str, DynoState)], limit: u32) {
    routes
        .publish(RouteTable::builder().app(spec(dynos, limit)))
        .expect("publish");
}

fn demo(routes: &Routes) -> Arc<App> {
    routes.load().app("demo").expect("app").clone()
}

fn queued(app: &Arc<App>) -> Ticket {
    claim(app, None).expect_err("every dyno busy: queued")
}

const UP: DynoState = DynoState::Up;

#[test]
fn release_hands_the_slot_to_the_oldest_waiter_in_arrival_order() {
    let routes = routes(&[("web.1", UP)], 1);
    let app = demo(&routes);
    let mut slot = claim(&app, None).expect("idle dyno");
    let mut tickets: Vec<Ticket> = (0..5).map(|_| queued(&app)).collect();
    assert_eq!(
        tickets.iter().map(|t| t.position).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(app.live.queued(), 5);
    for i in 0..5 {
        drop(slot);
        slot = tickets[i].try_take().expect("the oldest waiter is served");
        assert!(
            tickets[i + 1..].iter_mut().all(|t| t.try_take().is_none()),
            "only the oldest"
        );
        assert_eq!(app.live.queued(), 4 - i);
    }
    drop(tickets);
    drop(slot);
    assert_eq!(app.web[0].live.in_flight(), 0);
}

#[test]
fn a_new_arrival_does_not_overtake_the_queue() {
    let routes = routes(&[("web.1", UP), ("web.2", UP)], 1);
    let app = demo(&routes);
    let a = claim(&app, None).expect("slot");
    let _b = claim(&app, None).expect("slot");
    let mut waiting = queued(&app);
    // A slot frees and goes to the waiter, not to whoever comes next.
    drop(a);
    let _served = waiting.try_take().expect("the waiter got it");
    assert!(claim(&app, None).is_err(), "both dynos busy again");
}

#[test]
fn a_dropped_ticket_leaves_the_queue_at_once_and_swallows_no_slot() {
    let routes = routes(&[("web.1", UP)], 1);
    let app = demo(&routes);
    let slot = claim(&app, None).expect("slot");
    let gone = queued(&app);
    let mut next = queued(&app);
    let mut last = queued(&app);
    drop(gone);
    assert_eq!(
        app.live.queued(),
        2,
        "left at once, not at the next dispatch"
    );
    drop(slot);
    let slot = next
        .try_take()
        .expect("the slot skips the abandoned ticket");
    drop(next);
    drop(slot);
    assert_eq!(app.live.queued(), 0);
    let slot = last.try_take().expect("then the last waiter");
    drop(last);
    drop(slot);
    assert_eq!(app.web[0].live.in_flight(), 0);
    assert!(claim(&app, None).is_ok(), "fast path again");
}

#[test]
fn a_ticket_abandoned_holding_an_unclaimed_slot_gives_it_to_the_next() {
    let routes = routes(&[("web.1", UP)], 1);
    let app = demo(&routes);
    let slot = claim(&app, None).expect("slot");
    let holder = queued(&app);
    let mut next = queued(&app);
    drop(slot); // handed to `holder`, which never looks
    drop(holder);
    let slot = next.try_take().expect("passed on");
    assert_eq!(slot.dyno().live.in_flight(), 1);
}

#[test]
fn publication_serves_the_queue_from_the_new_dynos() {
    let routes = routes(&[("web.1", UP)], 1);
    let old = demo(&routes);
    let busy = claim(&old, None).expect("slot");
    let mut first = queued(&old);
    let mut second = queued(&old);
    // A deploy: web.1 leaves, an idle web.2 arrives.
    publish(&routes, &[("web.2", UP)], 1);
    let on_new = first.try_take().expect("served at publication");
    assert_eq!(&*on_new.dyno().name, "web.2");
    assert!(Arc::ptr_eq(on_new.app(), &demo(&routes)), "new snapshot");
    assert!(second.try_take().is_none(), "web.2 has one slot");
    // The next release, even of the old dyno, dispatches on the new table.
    drop(busy);
    assert!(second.try_take().is_none(), "web.1 is gone");
    drop(on_new);
    let on_new = second.try_take().expect("web.2 freed");
    assert_eq!(&*on_new.dyno().name, "web.2");
    assert_eq!(old.live.queued(), 0);
}

#[test]
fn publication_of_a_dyno_that_came_up_or_a_higher_limit_serves_the_queue() {
    let routes = routes(&[("web.1", UP), ("web.2", DynoState::Starting)], 1);
    let app = demo(&routes);
    let _busy = claim(&app, None).expect("slot");
    let mut booted = queued(&app);
    let mut raised = queued(&app);
    publish(&routes, &[("web.1", UP), ("web.2", UP)], 1);
    let on_booted = booted.try_take().expect("web.2 up");
    assert_eq!(&*on_booted.dyno().name, "web.2");
    assert!(raised.try_take().is_none());
    publish(&routes, &[("web.1", UP), ("web.2", UP)], 2);
    let _more = raised.try_take().expect("limit raised to 2");
}

#[test]
fn an_update_serves_the_changed_apps_queue_and_keeps_the_others() {
    let routes = routes(&[("web.1", UP)], 1);
    routes
        .update(TableUpdate {
            revision: 1,
            apps: vec![AppSpec::new("other").dyno("web.1", SocketAddr::from(([127, 0, 0, 1], 9)))],
            ..TableUpdate::default()
        })
        .expect("update");
    let old = demo(&routes);
    let busy = claim(&old, None).expect("slot");
    let mut first = queued(&old);
    let mut second = queued(&old);
    // A change to another app leaves `demo`'s snapshot, and its queue, as
    // they were: nothing is dispatched and the queue still uses it.
    routes
        .update(TableUpdate {
            revision: 2,
            removed_apps: vec!["other".into()],
            ..TableUpdate::default()
        })
        .expect("update");
    assert!(Arc::ptr_eq(&old, &demo(&routes)), "unchanged snapshot");
    assert!(first.try_take().is_none());
    // A deploy of `demo` as an update: web.1 leaves, an idle web.2 arrives.
    routes
        .update(TableUpdate {
            revision: 3,
            apps: vec![spec(&[("web.2", UP)], 1)],
            ..TableUpdate::default()
        })
        .expect("update");
    let on_new = first.try_take().expect("served at the update");
    assert_eq!(&*on_new.dyno().name, "web.2");
    assert!(Arc::ptr_eq(on_new.app(), &demo(&routes)), "new snapshot");
    drop(busy);
    assert!(second.try_take().is_none(), "web.1 is gone");
    drop(on_new);
    assert_eq!(
        &*second.try_take().expect("web.2 freed").dyno().name,
        "web.2"
    );
    assert_eq!(old.live.queued(), 0);
}

#[test]
fn a_request_queued_on_an_old_snapshot_after_publication_uses_the_new_one() {
    let routes = routes(&[("web.1", UP)], 1);
    let old = demo(&routes);
    let _busy = claim(&old, None).expect("slot");
    publish(&routes, &[("web.1", UP), ("web.2", UP)], 1);
    // A request that loaded the table before the publication finds the
    // queue empty and a slot on the newest snapshot.
    let slot = old.live.queue.enqueue(&old).expect("slot on web.2");
    assert_eq!(&*slot.dyno().name, "web.2");
}

#[tokio::test(start_paused = true)]
async fn quarantine_expiry_serves_the_queue_without_polling() {
    let routes = routes(&[("web.1", UP), ("web.2", UP)], 1);
    let app = demo(&routes);
    let _busy = claim(&app, None).expect("slot");
    let refused = claim(&app, None).expect("slot");
    assert_eq!(&*refused.dyno().name, "web.2");
    let mut ticket = queued(&app);
    refused.quarantine(Duration::from_secs(1));
    drop(refused);
    assert!(ticket.try_take().is_none(), "web.2 is quarantined");
    let waited = tokio::time::timeout(Duration::from_millis(990), &mut ticket).await;
    assert!(waited.is_err(), "not before the quarantine ends");
    let slot = tokio::time::timeout(Duration::from_millis(20), &mut ticket)
        .await
        .expect("served when the quarantine ends")
        .expect("slot");
    assert_eq!(&*slot.dyno().name, "web.2");
}

#[tokio::test(start_paused = true)]
async fn next_quarantine_end_is_the_earliest() {
    let routes = routes(&[("web.1", UP), ("web.2", UP)], 1);
    let app = demo(&routes);
    assert_eq!(next_quarantine_end(&app), None);
    let start = tokio::time::Instant::now();
    app.web[0].live.quarantine(Duration::from_secs(5));
    app.web[1].live.quarantine(Duration::from_secs(2));
    let end = next_quarantine_end(&app).expect("quarantined");
    assert!(end > start + Duration::from_millis(1990) && end <= start + Duration::from_secs(2));
    tokio::time::sleep_until(end).await;
    assert!(!app.web[1].live.is_quarantined());
    assert!(app.web[0].live.is_quarantined());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_times_out_leaves_the_queue() {
    let routes = routes(&[("web.1", UP)], 1);
    let app = demo(&routes);
    let slot = claim(&app, None).expect("slot");
    let ticket = queued(&app);
    let timed_out = tokio::time::timeout(Duration::from_secs(30), ticket).await;
    assert!(timed_out.is_err());
    assert_eq!(
        app.live.queued(),
        0,
        "the timed-out future took its ticket away"
    );
    drop(slot);
    assert_eq!(
        app.web[0].live.in_flight(),
        0,
        "no one holds the freed slot"
    );
}

#[test]
fn admission_bounds_in_flight_plus_queued() {
    let routes = Routes::new(
        RouteTable::builder()
            .app(AppSpec::new("demo").settings(AppSettings {
                max_in_flight: Some(2),
                ..AppSettings::default()
            }))
            .build()
            .expect("table"),
    );
    let app = demo(&routes);
    let a = Admission::try_new(&app).expect("1");
    let _b = Admission::try_new(&app).expect("2");
    assert!(Admission::try_new(&app).is_none(), "H11");
    drop(a);
    assert!(Admission::try_new(&app).is_some());
}
