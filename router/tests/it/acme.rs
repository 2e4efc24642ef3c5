//! ACME HTTP-01: the router answers `/.well-known/acme-challenge/<token>`
//! from the table before the app is asked, and only for tokens in flight.

use router::{AppSettings, AppSpec};

use crate::support::client::Resp;
use crate::support::switchyard::Running;
use crate::support::{get, Behaviour, Dyno, Switchyard};

async fn challenge(sy: &Running, host: &str, token: &str) -> Resp {
    let path = format!("/.well-known/acme-challenge/{token}");
    get(sy.addr, host, &path, &[]).await
}

fn with_challenge(app: AppSpec) -> AppSpec {
    AppSpec {
        acme_challenges: vec![("tok-1".into(), "tok-1.thumbprint".into())],
        ..app
    }
}

#[tokio::test]
async fn challenge_in_flight_is_answered_by_the_router_even_in_maintenance() {
    let dyno = Dyno::start(Behaviour::Respond("from the dyno")).await;
    let settings = AppSettings {
        maintenance: true,
        force_https: true,
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .app(with_challenge(
            AppSpec::new("demo")
                .domain("www.example.test")
                .dyno("web.1", dyno.addr)
                .settings(settings),
        ))
        .start()
        .await;
    let r = challenge(&sy, "www.example.test", "tok-1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "tok-1.thumbprint");
    assert!(dyno.requests().is_empty(), "the dyno was asked");
    // Another token is the app's business: maintenance answers it.
    let r = challenge(&sy, "www.example.test", "other").await;
    assert_eq!(r.status, 503);
}

#[tokio::test]
async fn unknown_tokens_and_other_hosts_reach_the_app() {
    let dyno = Dyno::start(Behaviour::Respond("from the dyno")).await;
    let sy = Switchyard::new()
        .app(with_challenge(
            AppSpec::new("demo")
                .domain("www.example.test")
                .dyno("web.1", dyno.addr),
        ))
        .app(AppSpec::new("other").dyno("web.1", dyno.addr))
        .start()
        .await;
    let r = challenge(&sy, "www.example.test", "nope").await;
    assert_eq!((r.status, r.body.as_str()), (200, "from the dyno"));
    // The token belongs to `demo`; `other` does not answer it.
    let r = challenge(&sy, "other.localhost", "tok-1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "from the dyno"));
    // A publication without the challenge stops the answer.
    sy.publish(vec![AppSpec::new("demo")
        .domain("www.example.test")
        .dyno("web.1", dyno.addr)]);
    let r = challenge(&sy, "www.example.test", "tok-1").await;
    assert_eq!((r.status, r.body.as_str()), (200, "from the dyno"));
}
