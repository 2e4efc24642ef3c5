//! The shipper against a real log router: router lines sent over syslog
//! TCP and over syslog TLS reach the app's channel as `heroku[router]`.

use std::sync::Arc;
use std::time::Instant;

use logplex::{Directory, ShipSettings, Shipper};

use crate::support::{client_trusting, eventually, quick_settings, App, Plex};

/// Every app's lines to one log router, with one token.
struct To {
    token: Arc<str>,
    dest: Arc<str>,
}

impl Directory for To {
    fn token(&self, _app_id: &str) -> Option<Arc<str>> {
        Some(self.token.clone())
    }
    fn destination(&self, _app_id: &str) -> Option<Arc<str>> {
        Some(self.dest.clone())
    }
}

#[tokio::test]
async fn shipped_lines_reach_the_channel_as_heroku_router_over_tcp_and_tls() {
    let app = App::new("demo");
    let plex = Plex::start(quick_settings(), &[&app]).await;
    let ways = [
        ("tcp", plex.tcp.to_string(), None),
        (
            "tls",
            format!("localhost:{}", plex.tls.port()),
            Some(client_trusting(&plex.tls_cert)),
        ),
    ];
    for (way, dest, tls) in ways {
        let shipper = Shipper::start(
            ShipSettings {
                tls,
                ..ShipSettings::default()
            },
            Arc::new(To {
                token: app.heroku_token.as_str().into(),
                dest: dest.into(),
            }),
        );
        let line = format!("at=info method=GET path=\"/{way}\" status=200");
        shipper.enqueue(&app.id, &line, Instant::now());
        let wanted = format!("heroku[router]: {line}");
        eventually(&format!("the line over {way} is in the channel"), || {
            plex.logplex
                .recent(&app.id, 100)
                .iter()
                .any(|l| l.ends_with(&wanted))
        })
        .await;
        assert!(shipper.flush(std::time::Duration::from_secs(5)).await);
        assert_eq!(
            shipper
                .stats()
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
}
