//! Automated certificate management: the `/apps/{app}/acm` endpoints, and
//! the ACME manager against a real CA (pebble) validating HTTP-01 on a
//! real router, with the issued certificates checked by curl.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use control::acme::{self, AcmeSettings};
use serde_json::{json, Value};

use crate::pebble::{self, Pebble, UNRESOLVABLE};
use crate::support::{assert_error, eventually, eventually_some, Harness, TempDir};

async fn add_domain(h: &Harness, app: &str, host: &str) {
    let (status, body) = h
        .call(
            "POST",
            &format!("/apps/{app}/domains"),
            Some(json!({ "hostname": host })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// `hostname → (acm_status, acm_status_reason)` of the app's custom domains.
async fn acm_statuses(h: &Harness, app: &str) -> Vec<(String, Value, Value)> {
    let (status, body) = h.get(&format!("/apps/{app}/domains")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .expect("array")
        .iter()
        .filter(|d| d["kind"] == "custom")
        .map(|d| {
            (
                d["hostname"].as_str().unwrap_or_default().to_string(),
                d["acm_status"].clone(),
                d["acm_status_reason"].clone(),
            )
        })
        .collect()
}

async fn refresh(h: &Harness, flag: bool) -> (u16, Value) {
    let body = json!({ "acm_refresh": flag });
    h.call("PATCH", "/apps/demo/acm", Some(body)).await
}

#[tokio::test]
async fn enabling_disabling_and_refreshing_acm_show_in_the_app_and_its_domains() {
    let h = Harness::start().await;
    h.app("demo").await;
    add_domain(&h, "demo", "www.example.test").await;
    add_domain(&h, "demo", "*.wild.example.test").await;
    assert_eq!(h.get("/apps/demo").await.1["acm"], false);
    // Refreshing needs ACM on; `acm_refresh` must be true.
    let (status, body) = refresh(&h, true).await;
    assert_error(status, &body, 422, "invalid_params", "not enabled");

    let (status, body) = h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    assert_eq!((status, &body["acm"]), (200, &json!(true)), "{body}");
    assert_eq!(h.get("/apps/demo").await.1["acm"], true);
    let statuses = acm_statuses(&h, "demo").await;
    // HTTP-01 cannot prove a wildcard: ACM leaves it alone.
    assert!(statuses.contains(&("www.example.test".into(), json!("pending"), Value::Null)));
    assert!(statuses.contains(&("*.wild.example.test".into(), Value::Null, Value::Null)));
    // A domain added while ACM is on starts pending.
    add_domain(&h, "demo", "api.example.test").await;
    assert!(acm_statuses(&h, "demo").await.contains(&(
        "api.example.test".into(),
        json!("pending"),
        Value::Null
    )));
    let (status, body) = refresh(&h, false).await;
    assert_error(status, &body, 422, "invalid_params", "acm_refresh");
    let (status, body) = refresh(&h, true).await;
    assert_eq!((status, &body["acm"]), (200, &json!(true)), "{body}");

    let (status, body) = h.call("DELETE", "/apps/demo/acm", None).await;
    assert_eq!((status, &body["acm"]), (200, &json!(false)), "{body}");
    assert!(acm_statuses(&h, "demo")
        .await
        .iter()
        .all(|(_, s, r)| s.is_null() && r.is_null()));
    let (status, body) = h.call("POST", "/apps/nope/acm", Some(json!({}))).await;
    assert_error(status, &body, 404, "not_found", "nope");
    let audit = h.logs.messages().join("\n");
    for line in ["Enable ACM", "Refresh ACM", "Disable ACM"] {
        assert!(audit.contains(line), "{line:?} not in {audit}");
    }
}

/// A control plane with a router serving its table on plain HTTP and
/// HTTPS, and a pebble validating on that router's HTTP port.
struct Edge {
    h: Harness,
    https: SocketAddr,
    pebble: Pebble,
    _dir: TempDir,
}

impl Edge {
    async fn start(validity: Option<Duration>) -> Edge {
        let h = Harness::start().await;
        let dir = TempDir::new("acm");
        let router = router::Router::new(h.routes.clone(), Arc::new(router::NullSink));
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let https = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (http_port, https_addr) = (
            http.local_addr().expect("addr").port(),
            https.local_addr().expect("addr"),
        );
        let default =
            rcgen::generate_simple_self_signed(vec!["default.invalid".to_string()]).expect("rcgen");
        let tls = router::tls::server_config(
            h.routes.clone(),
            &router::TlsSettings {
                default_chain_pem: default.cert.pem(),
                default_key_pem: default.key_pair.serialize_pem(),
                min_version: router::MinTls::Tls12,
            },
        )
        .expect("tls config");
        // Both listeners live as long as the test's runtime.
        tokio::spawn(router::serve(http, router.clone(), std::future::pending()));
        tokio::spawn(router::serve_tls(
            https,
            router,
            tls,
            std::future::pending(),
        ));
        let dns = pebble::dns();
        let pebble_dir = dir.0.join("pebble");
        let pebble = tokio::task::spawn_blocking(move || {
            Pebble::start(&pebble_dir, dns, http_port, validity)
        })
        .await
        .expect("pebble");
        Edge {
            h,
            https: https_addr,
            pebble,
            _dir: dir,
        }
    }

    /// Runs the ACME manager against pebble for the rest of the test.
    fn manage(&self, max_attempts: u32) {
        let settings = AcmeSettings {
            directory: self.pebble.directory.clone(),
            ca_root: Some(self.pebble.tls_root.clone()),
            retry_after: Duration::ZERO,
            max_attempts,
            order_timeout: Duration::from_secs(20),
            propagation: Duration::ZERO,
        };
        tokio::spawn(acme::run(
            self.h.control.clone(),
            settings,
            std::future::pending(),
        ));
    }

    /// curl over TLS to `host` on the router, trusting only pebble's
    /// issuing root: the HTTP status when the certificate verifies.
    async fn verified(&self, host: &str) -> Option<String> {
        let port = self.https.port();
        let args = vec![
            "--cacert".to_string(),
            self.pebble.issuing_root.display().to_string(),
            "--resolve".to_string(),
            format!("{host}:{port}:127.0.0.1"),
            "-o".to_string(),
            "/dev/null".to_string(),
            "-w".to_string(),
            "%{http_code}".to_string(),
            format!("https://{host}:{port}/"),
        ];
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pebble::curl(&args)
        })
        .await
        .expect("curl")
    }

    /// The app's SNI endpoints as `(cert_domains, expires_at, acm)`.
    async fn endpoints(&self, app: &str) -> Vec<(Value, Value, Value)> {
        let (status, body) = self.h.get(&format!("/apps/{app}/sni-endpoints")).await;
        assert_eq!(status, 200, "{body}");
        body.as_array()
            .expect("array")
            .iter()
            .map(|e| {
                let c = &e["ssl_cert"];
                (
                    c["cert_domains"].clone(),
                    c["expires_at"].clone(),
                    c["acm"].clone(),
                )
            })
            .collect()
    }

    /// Waits until `host` shows `want`; its `acm_status_reason` then.
    async fn wait_status(&self, app: &str, host: &str, want: &str) -> Value {
        let h = &self.h;
        eventually_some(&format!("{host} is {want}"), || async move {
            acm_statuses(h, app)
                .await
                .into_iter()
                .find(|(n, s, _)| n == host && s == want)
                .map(|(.., reason)| reason)
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acm_obtains_certificates_from_a_real_ca_and_keeps_serving_them_when_disabled() {
    let edge = Edge::start(None).await;
    let h = &edge.h;
    h.app("demo").await;
    let broken = format!("{UNRESOLVABLE}.example.test");
    for host in ["www.example.test", "api.example.test", broken.as_str()] {
        add_domain(h, "demo", host).await;
    }
    // Nothing is served for the names before ACM.
    assert_eq!(edge.verified("www.example.test").await, None);
    edge.manage(2);
    let (status, body) = h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");

    for host in ["www.example.test", "api.example.test"] {
        edge.wait_status("demo", host, "cert issued").await;
        // No dyno: the router's 503, over TLS that curl verified against
        // pebble's root for this very name.
        assert_eq!(edge.verified(host).await.as_deref(), Some("503"), "{host}");
    }
    // The name that cannot validate fails, says why, and holds back no other.
    let reason = edge.wait_status("demo", &broken, "failed").await;
    let reason = reason.as_str().unwrap_or_default();
    assert!(
        reason.contains("NXDOMAIN") || reason.contains(&broken),
        "{reason}"
    );
    let endpoints = edge.endpoints("demo").await;
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    assert!(endpoints.iter().all(|(.., acm)| *acm == json!(true)));
    let log = h.logs.messages().join("\n");
    assert!(
        log.contains("heroku[acm]: Certificate issued for www.example.test"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "heroku[acm]: Certificate order for {broken} failed"
        )),
        "{log}"
    );
    // The challenges left the table with their orders.
    let route = &h.get("/routes").await.1;
    assert!(!route.to_string().contains("acme_challenges"), "{route}");

    // Disabled: the statuses go, the certificates stay and are served.
    let (status, _) = h.call("DELETE", "/apps/demo/acm", None).await;
    assert_eq!(status, 200);
    assert!(acm_statuses(h, "demo")
        .await
        .iter()
        .all(|(_, s, _)| s.is_null()));
    assert_eq!(edge.endpoints("demo").await.len(), 2);
    assert_eq!(
        edge.verified("www.example.test").await.as_deref(),
        Some("503")
    );

    // A removed domain takes its ACM certificate with it; the other stays.
    let (status, body) = h
        .call("DELETE", "/apps/demo/domains/api.example.test", None)
        .await;
    assert_eq!(status, 200, "{body}");
    let left = edge.endpoints("demo").await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0, json!(["www.example.test"]), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acm_renews_a_certificate_at_two_thirds_of_its_life() {
    // Pebble issues certificates good for 12 s: renewal is due 8 s in.
    let edge = Edge::start(Some(Duration::from_secs(12))).await;
    let h = &edge.h;
    h.app("demo").await;
    add_domain(h, "demo", "www.example.test").await;
    edge.manage(3);
    h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    edge.wait_status("demo", "www.example.test", "cert issued")
        .await;
    let first = edge.endpoints("demo").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let edge_ref = &edge;
    eventually("the certificate is renewed", || async {
        let now = edge_ref.endpoints("demo").await;
        now.len() == 1 && now[0].1 != first[0].1
    })
    .await;
    assert_eq!(
        edge.verified("www.example.test").await.as_deref(),
        Some("503")
    );
    let log = h.logs.messages().join("\n");
    assert!(
        log.matches("Certificate issued for www.example.test")
            .count()
            >= 2,
        "{log}"
    );
}

#[tokio::test]
async fn a_challenge_in_flight_reaches_the_local_router_and_the_routes_remote_routers_read() {
    use control::model::{key, AcmeChallenge, DomainAcm, DomainRecord};
    let h = Harness::start().await;
    let app = h.app("demo").await;
    add_domain(&h, "demo", "www.example.test").await;
    h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    let app_id = app["id"].as_str().expect("id").to_string();
    // What the ACME manager commits while its order is in flight.
    let challenge = AcmeChallenge {
        token: "tok-1".into(),
        key_authorization: "tok-1.thumb".into(),
    };
    h.control
        .change(|txn| {
            let prefix = key::under("domains", &app_id);
            for mut d in txn.list::<DomainRecord>(&prefix) {
                d.acm = Some(DomainAcm {
                    challenge: Some(challenge.clone()),
                    ..d.acm.unwrap_or_default()
                });
                txn.put(key::domain(&app_id, &d.id), &d);
            }
            Ok(())
        })
        .await
        .expect("commit");
    let path = "/.well-known/acme-challenge/tok-1";
    let table = h.routes.load();
    let local = table.lookup("www.example.test").expect("app");
    assert_eq!(local.acme_answer(path), Some("tok-1.thumb"));
    assert_eq!(local.acme_answer("/.well-known/acme-challenge/other"), None);
    // A router following the control plane builds the same from `/routes`.
    let routes = h.get("/routes").await.1;
    let remote: Vec<control::AppRoute> =
        serde_json::from_value(routes["apps"].clone()).expect("routes");
    let spec = remote[0].to_spec();
    assert_eq!(
        spec.acme_challenges,
        vec![("tok-1".to_string(), "tok-1.thumb".to_string())]
    );
    // Turning ACM off drops the challenge from both.
    h.call("DELETE", "/apps/demo/acm", None).await;
    let table = h.routes.load();
    let local = table.lookup("www.example.test").expect("app");
    assert_eq!(local.acme_answer(path), None);
    let routes = h.get("/routes").await.1;
    assert!(!routes.to_string().contains("tok-1"), "{routes}");
}

/// An "ACME CA" that accepts connections and never answers.
async fn silent_ca() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (format!("https://{addr}/dir"), task)
}

fn settings(directory: String, order_timeout: Duration, max_attempts: u32) -> AcmeSettings {
    AcmeSettings {
        directory,
        ca_root: None,
        retry_after: Duration::ZERO,
        max_attempts,
        order_timeout,
        propagation: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_ca_that_never_answers_fails_the_order_after_the_timeout() {
    let h = Harness::start().await;
    h.app("demo").await;
    add_domain(&h, "demo", "www.example.test").await;
    let (directory, _ca) = silent_ca().await;
    tokio::spawn(acme::run(
        h.control.clone(),
        settings(directory, Duration::from_millis(300), 1),
        std::future::pending(),
    ));
    h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    let reason = eventually_some("the order fails", || async {
        acm_statuses(&h, "demo")
            .await
            .into_iter()
            .find(|(_, s, _)| s == "failed")
            .map(|(.., r)| r)
    })
    .await;
    assert!(
        reason.as_str().unwrap_or_default().contains("within"),
        "{reason}"
    );
    let log = h.logs.messages().join("\n");
    assert!(
        log.contains("heroku[acm]: Certificate order for www.example.test failed (attempt 1 of 1)"),
        "{log}"
    );
}

#[tokio::test]
async fn a_manager_stopped_mid_order_stops_at_once_and_leaves_a_claim_that_lapses() {
    use control::model::{key, DomainRecord};
    let h = Harness::start().await;
    let app = h.app("demo").await;
    add_domain(&h, "demo", "www.example.test").await;
    let (directory, _ca) = silent_ca().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let manager = tokio::spawn(acme::run(
        h.control.clone(),
        settings(directory, Duration::from_secs(60), 3),
        async move {
            let _ = stopped.await;
        },
    ));
    h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    let app_id = app["id"].as_str().expect("id").to_string();
    let domain = || {
        h.control
            .read()
            .list::<DomainRecord>(&key::under("domains", &app_id))
            .remove(0)
    };
    eventually("the order is claimed", || {
        let claimed = domain().acm.is_some_and(|a| a.orderer.is_some());
        async move { claimed }
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(crate::support::patience(), manager)
        .await
        .expect("the manager stops mid-order")
        .expect("no panic");
    // Still pending; the claim binds other nodes only until it lapses.
    let acm = domain().acm.expect("acm");
    assert_eq!(acm.status, "pending");
    let until = acm.claimed_until.expect("claim");
    let until = chrono::DateTime::parse_from_rfc3339(&until).expect("time");
    let lapse = until.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(lapse <= chrono::Duration::seconds(90), "{lapse}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_the_ca_does_not_know_is_replaced_by_a_new_one() {
    use control::model::{key, AcmeAccountRecord};
    let edge = Edge::start(None).await;
    let h = &edge.h;
    // Credentials for an account id pebble never issued (a CA that was
    // reset, say): a real key, a made-up account URL.
    let (_, credentials) = instant_acme::Account::builder_with_root(&edge.pebble.tls_root)
        .expect("builder")
        .create(
            &instant_acme::NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            edge.pebble.directory.clone(),
            None,
        )
        .await
        .expect("account");
    let mut stale = serde_json::to_value(&credentials).expect("json");
    let id = stale["id"].as_str().expect("id").to_string();
    stale["id"] = json!(format!("{id}unknown"));
    let record = AcmeAccountRecord {
        directory: edge.pebble.directory.clone(),
        credentials: stale.clone(),
        created_at: "2026-01-01T00:00:00Z".into(),
    };
    h.control
        .change(|txn| {
            txn.put(key::ACME_ACCOUNT, &record);
            Ok(())
        })
        .await
        .expect("commit");
    h.app("demo").await;
    add_domain(h, "demo", "www.example.test").await;
    edge.manage(3);
    h.call("POST", "/apps/demo/acm", Some(json!({}))).await;
    edge.wait_status("demo", "www.example.test", "cert issued")
        .await;
    let log = h.logs.messages().join("\n");
    assert!(log.contains("accountDoesNotExist"), "{log}");
    let now: AcmeAccountRecord = h.control.read().get(key::ACME_ACCOUNT).expect("account");
    assert_ne!(now.credentials["id"], stale["id"]);
}
