//! Automatic certificates as a Heroku user gets them: `heroku
//! certs:auto:enable --wait` against `switchyard serve` ordering from a
//! real ACME CA (pebble) that validates HTTP-01 on the router's real HTTP
//! port, then curl over HTTPS trusting only that CA's root — no
//! certificate uploaded by hand.

use std::net::TcpListener;

use serde_json::json;

use crate::heroku_cli::Cli;
use crate::pebble::{self, Pebble};
use crate::support::{api, create_app, serve_args, Proc, TempDir, KEY, SERVE_ROLES};

#[test]
fn heroku_certs_auto_enable_gets_certificates_that_curl_trusts() {
    let dir = TempDir::new("acm-e2e");
    // The router's HTTP socket is ours: pebble is told its port before
    // switchyard starts, and switchyard gets the socket itself.
    let router_http = TcpListener::bind("127.0.0.1:0").expect("bind");
    let http_port = router_http.local_addr().expect("addr").port();
    let pebble = Pebble::start(&dir.0.join("pebble"), pebble::dns(), http_port, None);
    let mut args = serve_args(&dir.0.join("data"), None);
    args.extend([
        "--acme-directory".to_string(),
        pebble.directory.clone(),
        "--acme-ca-root".to_string(),
        pebble.tls_root.display().to_string(),
    ]);
    let sy = Proc::start_with_socket(
        &args,
        &[("SWITCHYARD_API_KEY", KEY)],
        &[SERVE_ROLES, &["router-https"]].concat(),
        "router-http",
        &router_http,
    );
    let api_addr = sy.addr("api");
    create_app(api_addr, KEY, "demo", None);
    for host in ["www.example.test", "api.example.test"] {
        let (status, body) = api(
            api_addr,
            KEY,
            "POST",
            "/apps/demo/domains",
            Some(json!({ "hostname": host })),
        )
        .expect("add domain");
        assert_eq!(status, 201, "{body}");
    }

    let cli = Cli::new(api_addr);
    cli.expect(
        &["certs:auto:enable", "--wait", "-a", "demo"],
        &["Enabling Automatic Certificate Management", "starting"],
    );
    let status = cli.expect(
        &["certs:auto", "-a", "demo"],
        &[
            "Automatic Certificate Management is enabled on demo",
            "www.example.test",
            "api.example.test",
        ],
    );
    assert_eq!(status.matches("Cert issued").count(), 2, "{status}");

    let https = sy.addr("router-https").port();
    for host in ["www.example.test", "api.example.test"] {
        let code = pebble::curl(&[
            "--cacert",
            &pebble.issuing_root.display().to_string(),
            "--resolve",
            &format!("{host}:{https}:127.0.0.1"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{host}:{https}/"),
        ]);
        // No dyno: the router's 503, over TLS curl verified for `host`.
        assert_eq!(code.as_deref(), Some("503"), "{host}");
    }

    // Refresh orders both again; `--wait` returns once they are issued.
    cli.expect(
        &["certs:auto:refresh", "-a", "demo"],
        &["Refreshing Automatic Certificate Management"],
    );
    let status = cli.run(&["certs:auto", "--wait", "-a", "demo"]);
    assert_eq!(status.matches("Cert issued").count(), 2, "{status}");

    cli.expect(
        &["certs:auto:disable", "-a", "demo", "--confirm", "demo"],
        &["Disabling Automatic Certificate Management"],
    );
    cli.expect(
        &["certs:auto", "-a", "demo"],
        &["Automatic Certificate Management is disabled on demo"],
    );
}
