use super::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn table() -> RouteTable {
    RouteTable::builder()
        .app(
            AppSpec::new("demo")
                .domain("www.example.com")
                .domain("*.example.com"),
        )
        .app(AppSpec::new("api").domain("API.example.com"))
        .app(AppSpec::new("other").domain("*.other.org"))
        .build()
        .expect("valid table")
}

fn name(t: &RouteTable, host: &str) -> Option<String> {
    t.lookup(host).map(|a| a.name.to_string())
}

#[test]
fn exact_beats_wildcard_beats_base_domain() {
    let t = table();
    assert_eq!(name(&t, "www.example.com").as_deref(), Some("demo"));
    assert_eq!(name(&t, "api.example.com").as_deref(), Some("api"));
    assert_eq!(name(&t, "x.example.com").as_deref(), Some("demo"));
    assert_eq!(name(&t, "demo.localhost").as_deref(), Some("demo"));
    assert_eq!(name(&t, "api.localhost").as_deref(), Some("api"));
}

#[test]
fn case_port_and_trailing_dot_are_ignored() {
    let t = table();
    assert_eq!(name(&t, "API.Example.COM:8080").as_deref(), Some("api"));
    assert_eq!(name(&t, "demo.localhost.").as_deref(), Some("demo"));
    assert_eq!(name(&t, "Demo.LocalHost:80").as_deref(), Some("demo"));
    // An empty port is a port; a port that is not digits is part of the name.
    assert_eq!(name(&t, "demo.localhost:").as_deref(), Some("demo"));
    assert_eq!(name(&t, "demo.localhost:8o"), None);
    assert_eq!(name(&t, "demo.localhost:80:80"), None);
    assert_eq!(name(&t, ":80"), None);
}

#[test]
fn base_domain_names_resolve_in_a_table_without_wildcards() {
    let t = RouteTable::builder()
        .base_domain("localhost")
        .app(AppSpec::new("demo"))
        .build()
        .expect("valid table");
    assert_eq!(name(&t, "demo.localhost:3000").as_deref(), Some("demo"));
    assert_eq!(name(&t, "x.demo.localhost"), None);
    assert_eq!(name(&t, "demo"), None);
}

#[test]
fn wildcard_covers_only_the_leftmost_label() {
    let t = table();
    assert_eq!(name(&t, "a.b.example.com"), None);
    assert_eq!(name(&t, "example.com"), None);
    assert_eq!(name(&t, "a.other.org").as_deref(), Some("other"));
    assert_eq!(name(&t, "a.b.localhost"), None);
    assert_eq!(name(&t, "nope.localhost"), None);
    assert_eq!(name(&t, ""), None);
    assert_eq!(name(&t, "[::1]:80"), None);
}

#[test]
fn duplicate_domains_are_refused() {
    let err = RouteTable::builder()
        .app(AppSpec::new("a").domain("x.example.com"))
        .app(AppSpec::new("b").domain("X.example.com"))
        .build()
        .expect_err("conflict");
    assert!(matches!(err, TableError::DuplicateDomain { .. }));
}

#[test]
fn live_state_survives_a_swap() {
    let routes = Routes::new(
        RouteTable::builder()
            .app(
                AppSpec::new("demo")
                    .dyno("web.1", addr(1))
                    .dyno("web.2", addr(2)),
            )
            .build()
            .expect("table"),
    );
    let t1 = routes.load();
    let d1 = &t1.app("demo").expect("app").web[0];
    d1.live.acquire();
    routes
        .publish(
            RouteTable::builder().revision(2).app(
                AppSpec::new("demo")
                    .dyno("web.1", addr(1))
                    .dyno("web.3", addr(3)),
            ),
        )
        .expect("publish");
    let t2 = routes.load();
    assert_eq!(t2.revision(), 2);
    let app = t2.app("demo").expect("app");
    assert_eq!(app.web[0].live.in_flight(), 1);
    assert!(Arc::ptr_eq(&app.live, &t1.app("demo").expect("app").live));
    assert_eq!(app.web[1].live.in_flight(), 0);
    // A dyno that moved to a new address is a new dyno.
    routes
        .publish(RouteTable::builder().app(AppSpec::new("demo").dyno("web.1", addr(9))))
        .expect("publish");
    assert_eq!(
        routes.load().app("demo").expect("app").web[0]
            .live
            .in_flight(),
        0
    );
}

#[test]
fn only_web_dynos_are_kept_in_numeric_order() {
    let t = RouteTable::builder()
        .app(
            AppSpec::new("demo")
                .dyno("web.10", addr(10))
                .dyno("worker.1", addr(11))
                .dyno("web.2", addr(2)),
        )
        .build()
        .expect("table");
    let names: Vec<_> = t
        .app("demo")
        .expect("app")
        .web
        .iter()
        .map(|d| d.name.to_string())
        .collect();
    assert_eq!(names, ["web.2", "web.10"]);
}

/// What a table answers: every app (id, name, web dynos) and the app each
/// of `hosts` routes to.
fn view(t: &RouteTable, hosts: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = t
        .apps()
        .iter()
        .map(|a| {
            let web: Vec<String> = a
                .web
                .iter()
                .map(|d| format!("{}@{}", d.name, d.address))
                .collect();
            format!("{} {} {web:?}", a.id, a.name)
        })
        .collect();
    out.sort();
    for h in hosts {
        out.push(format!(
            "{h} -> {:?}",
            t.lookup(h).map(|a| a.id.to_string())
        ));
    }
    out
}

fn with_id(id: &str, name: &str) -> AppSpec {
    AppSpec {
        id: id.into(),
        ..AppSpec::new(name)
    }
}

const HOSTS: &[&str] = &[
    "www.example.com",
    "api.example.com",
    "x.example.com",
    "a.other.org",
    "www.other.org",
    "demo.localhost",
    "renamed.localhost",
    "api.localhost",
    "other.localhost",
    "fresh.localhost",
    "fresh.example.net",
    "x.fresh.example.net",
    "nope.localhost",
];

fn before() -> Vec<AppSpec> {
    vec![
        with_id("1", "demo")
            .domain("www.example.com")
            .domain("*.example.com")
            .dyno("web.1", addr(1)),
        with_id("2", "api").domain("API.example.com"),
        with_id("3", "other")
            .domain("*.other.org")
            .domain("www.other.org"),
    ]
}

#[test]
fn an_update_equals_a_full_rebuild() {
    let routes = Routes::new(RouteTable::builder().apps(before()).build().expect("table"));
    // One commit: `demo` is renamed and loses its wildcard to `other`, which
    // gives up `www.other.org` to a new app; `api` goes.
    let after = vec![
        with_id("1", "renamed")
            .domain("www.example.com")
            .dyno("web.1", addr(1))
            .dyno("web.2", addr(2)),
        with_id("3", "other")
            .domain("*.other.org")
            .domain("*.example.com"),
        with_id("4", "fresh")
            .domain("www.other.org")
            .domain("fresh.example.net.")
            .domain("*.FRESH.example.net"),
    ];
    let revision = routes
        .update(TableUpdate {
            revision: 7,
            apps: vec![after[0].clone(), after[1].clone(), after[2].clone()],
            removed_apps: vec!["2".into()],
            ..TableUpdate::default()
        })
        .expect("update");
    assert_eq!(revision, 7);
    let updated = routes.load();
    let rebuilt = RouteTable::builder().apps(after).build().expect("table");
    assert_eq!(updated.revision(), 7);
    assert_eq!(view(&updated, HOSTS), view(&rebuilt, HOSTS));
    assert_eq!(updated.apps().len(), 3);
    assert_eq!(name(&updated, "x.example.com").as_deref(), Some("other"));
    assert_eq!(name(&updated, "www.other.org").as_deref(), Some("fresh"));
    assert_eq!(name(&updated, "demo.localhost"), None);
    // `api`'s exact domain left with it: the wildcard covers it now.
    assert_eq!(name(&updated, "api.example.com").as_deref(), Some("other"));
    assert!(updated.app("demo").is_none());
    assert_eq!(updated.app_by_id("1").map(|a| &*a.name), Some("renamed"));
}

#[test]
fn an_update_that_conflicts_is_refused_and_the_table_kept() {
    let routes = Routes::new(
        RouteTable::builder()
            .revision(3)
            .apps(before())
            .build()
            .expect("table"),
    );
    let kept = view(&routes.load(), HOSTS);
    let refused = [
        (
            vec![with_id("4", "fresh").domain("WWW.example.com")],
            "DuplicateDomain",
        ),
        (
            vec![with_id("4", "fresh").domain("*.other.org")],
            "DuplicateDomain",
        ),
        (vec![with_id("4", "API")], "DuplicateApp"),
        (vec![with_id("4", "x"), with_id("4", "y")], "DuplicateAppId"),
        (
            vec![with_id("4", "x").domain("a*.example.com")],
            "InvalidDomain",
        ),
        // Two apps of one change claiming one domain.
        (
            vec![
                with_id("4", "x").domain("new.example.net"),
                with_id("5", "y").domain("new.example.net"),
            ],
            "DuplicateDomain",
        ),
    ];
    for (apps, want) in refused {
        let err = routes
            .update(TableUpdate {
                revision: 4,
                apps: apps.clone(),
                ..TableUpdate::default()
            })
            .expect_err("refused");
        assert!(format!("{err:?}").starts_with(want), "{apps:?}: {err:?}");
        // A full rebuild of the same apps is refused the same way.
        let mut all = before();
        all.extend(apps);
        let full = RouteTable::builder()
            .apps(all)
            .build()
            .expect_err("refused");
        assert!(format!("{full:?}").starts_with(want), "{full:?}");
        assert_eq!(routes.load().revision(), 3);
        assert_eq!(view(&routes.load(), HOSTS), kept);
    }
    let stale = routes.update(TableUpdate {
        revision: 3,
        ..TableUpdate::default()
    });
    assert_eq!(
        stale,
        Err(TableError::StaleRevision {
            current: 3,
            offered: 3
        })
    );
}

#[test]
fn an_update_keeps_live_state_and_unchanged_apps() {
    let routes = Routes::new(RouteTable::builder().apps(before()).build().expect("table"));
    let t1 = routes.load();
    let demo = t1.app("demo").expect("demo").clone();
    let api = t1.app("api").expect("api").clone();
    demo.web[0].live.acquire();
    routes
        .update(TableUpdate {
            revision: 1,
            apps: vec![with_id("1", "renamed")
                .dyno("web.1", addr(1))
                .dyno("web.2", addr(2))],
            ..TableUpdate::default()
        })
        .expect("update");
    let t2 = routes.load();
    let renamed = t2.app("renamed").expect("renamed");
    assert!(Arc::ptr_eq(&renamed.live, &demo.live), "app live state");
    assert_eq!(renamed.web[0].live.in_flight(), 1, "dyno live state");
    assert_eq!(renamed.web[1].live.in_flight(), 0);
    // An app the change did not name keeps its very snapshot.
    assert!(Arc::ptr_eq(t2.app("api").expect("api"), &api));
    assert!(Arc::ptr_eq(
        t2.lookup("api.example.com").expect("api"),
        &api
    ));
    // Removed and added back later, an app starts afresh.
    routes
        .update(TableUpdate {
            revision: 2,
            removed_apps: vec!["1".into()],
            ..TableUpdate::default()
        })
        .expect("update");
    routes
        .update(TableUpdate {
            revision: 3,
            apps: vec![with_id("1", "demo").dyno("web.1", addr(1))],
            ..TableUpdate::default()
        })
        .expect("update");
    let back = routes.load().app("demo").expect("demo").clone();
    assert!(!Arc::ptr_eq(&back.live, &demo.live));
    assert_eq!(back.web[0].live.in_flight(), 0);
    demo.web[0].live.release();
}

#[test]
fn an_update_notifies_watchers() {
    let routes = Routes::new(RouteTable::builder().apps(before()).build().expect("table"));
    let changed = routes.changed();
    tokio::pin!(changed);
    changed.as_mut().enable();
    routes
        .update(TableUpdate {
            revision: 1,
            removed_apps: vec!["3".into()],
            ..TableUpdate::default()
        })
        .expect("update");
    use std::future::Future;
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(changed.as_mut().poll(&mut cx).is_ready());
}
