//! TLS termination: SNI, default certificate, versions, HTTP/2 streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use router::{AppSettings, AppSpec, MinTls};
use rustls::pki_types::ServerName;

use crate::support::pki::Ca;
use crate::support::{h2_get, Behaviour, Dyno, Switchyard};

async fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("command runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The subject CN of the certificate served for `sni` (via openssl s_client).
async fn served_cn(addr: SocketAddr, sni: Option<&str>) -> String {
    let connect = addr.to_string();
    let mut args = vec!["s_client", "-connect", &connect, "-brief"];
    if let Some(name) = sni {
        args.extend(["-servername", name]);
    } else {
        args.push("-noservername");
    }
    let (_, text) = run("openssl", &args).await;
    text.lines()
        .find_map(|l| l.split("CN = ").nth(1).or_else(|| l.split("CN=").nth(1)))
        .filter(|_| text.contains("Peer certificate"))
        .map(|s| s.split(',').next().unwrap_or(s).trim().to_string())
        .unwrap_or_else(|| panic!("no peer certificate in: {text}"))
}

async fn secure() -> (Ca, Dyno, crate::support::switchyard::Running) {
    let ca = Ca::new();
    let dyno = Dyno::start(Behaviour::EchoHead).await;
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .domain("secure.example.com")
                .domain("*.wild.example.com")
                .dyno("web.1", dyno.addr),
        )
        .cert(ca.spec("c1", &["secure.example.com"]))
        .cert(ca.spec("c2", &["*.wild.example.com"]))
        .tls(ca.settings(MinTls::Tls12))
        .start()
        .await;
    (ca, dyno, sy)
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let (_ca, _dyno, sy) = secure().await;
    let addr = sy.tls_addr.expect("https");
    assert_eq!(
        served_cn(addr, Some("secure.example.com")).await,
        "secure.example.com"
    );
    assert_eq!(
        served_cn(addr, Some("a.wild.example.com")).await,
        "*.wild.example.com"
    );
    assert_eq!(
        served_cn(addr, Some("unknown.example.org")).await,
        "default.invalid"
    );
    assert_eq!(served_cn(addr, None).await, "default.invalid");
}

#[tokio::test]
async fn curl_https_and_http2_reach_the_dyno_with_forwarding_headers() {
    let (ca, dyno, sy) = secure().await;
    let addr = sy.tls_addr.expect("https");
    let dir = std::env::temp_dir().join(format!("switchyard-ca-{}", addr.port()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write ca");
    let resolve = format!("secure.example.com:{}:127.0.0.1", addr.port());
    let url = format!("https://secure.example.com:{}/tls?x=1", addr.port());
    let ca_path = ca_file.to_string_lossy().into_owned();
    let (ok, text) = run(
        "curl",
        &[
            "-sS",
            "-i",
            "--http1.1",
            "--cacert",
            &ca_path,
            "--resolve",
            &resolve,
            &url,
        ],
    )
    .await;
    assert!(ok && text.starts_with("HTTP/1.1 200"), "{text}");
    let (ok, text) = run(
        "curl",
        &[
            "-sS",
            "-i",
            "--http2",
            "--cacert",
            &ca_path,
            "--resolve",
            &resolve,
            &url,
        ],
    )
    .await;
    assert!(ok && text.starts_with("HTTP/2 200"), "{text}");
    let reqs = dyno.requests();
    assert_eq!(reqs.len(), 2);
    for req in &reqs {
        assert_eq!(
            req.request_line(),
            "GET /tls?x=1 HTTP/1.1",
            "dynos always get HTTP/1.1"
        );
        assert_eq!(req.header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(
            req.header("x-forwarded-port"),
            Some(addr.port().to_string())
        );
        assert_eq!(
            req.header("host").as_deref(),
            Some(format!("secure.example.com:{}", addr.port()).as_str())
        );
    }
    let lines = sy.wait_lines(2).await;
    assert!(
        lines[0].ends_with(" protocol=https tls_version=tls1.3 queue=0 wait=0ms"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1]
            .ends_with(" protocol=https http_version=http2 tls_version=tls1.3 queue=0 wait=0ms"),
        "{}",
        lines[1]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn old_tls_versions_are_refused_and_13_only_is_possible() {
    let (_ca, _dyno, sy) = secure().await;
    let addr = sy.tls_addr.expect("https").to_string();
    let old = ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"];
    let (ok, text) = run(
        "openssl",
        &[&["s_client", "-connect", &addr, "-brief"][..], &old[..]].concat(),
    )
    .await;
    assert!(
        !ok || !text.contains("Protocol version: TLSv1.1"),
        "TLS 1.1 must fail: {text}"
    );
    let (ok, text) = run(
        "openssl",
        &["s_client", "-connect", &addr, "-brief", "-tls1_2"],
    )
    .await;
    assert!(
        ok && text.contains("TLSv1.2"),
        "TLS 1.2 accepted by default: {text}"
    );

    let ca = Ca::new();
    let strict = Switchyard::new()
        .tls(ca.settings(MinTls::Tls13))
        .start()
        .await;
    let addr = strict.tls_addr.expect("https").to_string();
    let (ok, text) = run(
        "openssl",
        &["s_client", "-connect", &addr, "-brief", "-tls1_2"],
    )
    .await;
    assert!(
        !ok || !text.contains("Protocol version: TLSv1.2"),
        "1.3-only refuses 1.2: {text}"
    );
    let (ok, text) = run(
        "openssl",
        &["s_client", "-connect", &addr, "-brief", "-tls1_3"],
    )
    .await;
    assert!(ok && text.contains("TLSv1.3"), "{text}");
}

/// An HTTP/2 connection over TLS to `addr` for `host`.
async fn h2(
    ca: &Ca,
    addr: SocketAddr,
    host: &str,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(ca.client(&[b"h2"]));
    let name = ServerName::try_from(host.to_string()).expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn a_hundred_concurrent_streams_on_one_h2_connection() {
    let (ca, dyno, sy) = secure().await;
    let sender = h2(&ca, sy.tls_addr.expect("https"), "secure.example.com").await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let mut s = sender.clone();
        tasks.push(tokio::spawn(async move {
            h2_get(&mut s, &format!("https://secure.example.com/stream/{i}")).await
        }));
    }
    for t in tasks {
        let (status, body) = t.await.expect("join");
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).starts_with("GET /stream/"));
    }
    assert_eq!(dyno.requests().len(), 100);
}

#[tokio::test]
async fn one_stream_times_out_while_its_siblings_complete() {
    let ca = Ca::new();
    let dyno = Dyno::start(Behaviour::HangOn("/hang")).await;
    let settings = AppSettings {
        timers: router::Timers {
            first_byte: Duration::from_millis(300),
            ..router::Timers::default()
        },
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .domain("secure.example.com")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .cert(ca.spec("c1", &["secure.example.com"]))
        .tls(ca.settings(MinTls::Tls12))
        .start()
        .await;
    let sender = h2(&ca, sy.tls_addr.expect("https"), "secure.example.com").await;
    let mut hang = sender.clone();
    let slow =
        tokio::spawn(async move { h2_get(&mut hang, "https://secure.example.com/hang").await });
    let mut siblings = Vec::new();
    for i in 0..10 {
        let mut s = sender.clone();
        siblings.push(tokio::spawn(async move {
            h2_get(&mut s, &format!("https://secure.example.com/ok/{i}")).await
        }));
    }
    for s in siblings {
        assert_eq!(s.await.expect("join").0, 200);
    }
    assert_eq!(
        slow.await.expect("join").0,
        503,
        "H12 for the hanging stream"
    );
    let mut after = sender.clone();
    assert_eq!(
        h2_get(&mut after, "https://secure.example.com/ok/after")
            .await
            .0,
        200,
        "connection survives"
    );
    let lines = sy.wait_lines(12).await;
    let h12 = lines
        .iter()
        .find(|l| l.contains("code=H12"))
        .expect("H12 logged");
    assert!(
        h12.contains(r#"path="/hang""#) && h12.contains("http_version=http2"),
        "{h12}"
    );
}

#[tokio::test]
async fn certificate_swap_under_load_loses_no_request() {
    let ca = Ca::new();
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let app = move || {
        AppSpec::new("demo")
            .domain("secure.example.com")
            .dyno("web.1", dyno.addr)
    };
    let sy = Arc::new(
        Switchyard::new()
            .app(app())
            .cert(ca.spec("c1", &["secure.example.com"]))
            .tls(ca.settings(MinTls::Tls12))
            .start()
            .await,
    );
    let addr = sy.tls_addr.expect("https");
    let client = ca.client(&[b"http/1.1"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let sy = sy.clone();
        let stop = stop.clone();
        let certs: Vec<_> = (0..4)
            .map(|i| ca.spec(&format!("c{i}"), &["secure.example.com"]))
            .collect();
        tokio::spawn(async move {
            let mut swaps = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                sy.publish_with_certs(vec![app()], vec![certs[swaps % certs.len()].clone()]);
                swaps += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            swaps
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..25 {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let name = ServerName::try_from("secure.example.com").expect("name");
                let tls = tokio_rustls::TlsConnector::from(client.clone())
                    .connect(name, tcp)
                    .await
                    .expect("handshake verifies against the CA");
                let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .expect("h1");
                tokio::spawn(conn);
                let req = http::Request::get("/")
                    .header("host", "secure.example.com")
                    .body(Empty::<Bytes>::new())
                    .expect("req");
                let resp = s.send_request(req).await.expect("response");
                assert_eq!(resp.status(), 200);
                ok += 1;
            }
            ok
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("join");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let swaps = swapper.await.expect("join");
    assert_eq!(total, 200);
    assert!(swaps > 1, "certificates changed during the run");
}

#[tokio::test]
async fn https_redirect_and_hsts_are_per_app_options() {
    let ca = Ca::new();
    let dyno = Dyno::start(Behaviour::Respond("ok")).await;
    let settings = AppSettings {
        force_https: true,
        hsts_max_age: Some(31_536_000),
        ..AppSettings::default()
    };
    let sy = Switchyard::new()
        .app(
            AppSpec::new("demo")
                .domain("secure.example.com")
                .settings(settings)
                .dyno("web.1", dyno.addr),
        )
        .app(
            AppSpec::new("plain")
                .domain("plain.example.com")
                .dyno("web.1", dyno.addr),
        )
        .cert(ca.spec("c1", &["secure.example.com", "plain.example.com"]))
        .tls(ca.settings(MinTls::Tls12))
        .start()
        .await;
    let r = crate::support::get(sy.addr, "secure.example.com", "/a?b=1", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://secure.example.com/a?b=1")
    );
    assert!(dyno.requests().is_empty());
    let r = crate::support::get(sy.addr, "plain.example.com", "/", &[]).await;
    assert_eq!(r.status, 200, "other apps are not redirected");

    let mut sender = h2(&ca, sy.tls_addr.expect("https"), "secure.example.com").await;
    let req = http::Request::get("https://secure.example.com/")
        .body(Empty::new())
        .expect("req");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .map(|v| v.as_bytes()),
        Some(&b"max-age=31536000"[..])
    );
}

/// An HTTPS page server for `localhost` (signed by `ca`) that answers every
/// `GET` with the status and body currently in `page`, counting requests.
struct PageServer {
    addr: SocketAddr,
    page: Arc<std::sync::Mutex<(u16, &'static str)>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl PageServer {
    async fn start(ca: &Ca, status: u16, body: &'static str) -> PageServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (chain, key) = ca.leaf(&["localhost"]);
        let certs = rustls_pemfile::certs(&mut chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = rustls_pemfile::private_key(&mut key.as_bytes())
            .expect("key")
            .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = PageServer {
            addr: listener.local_addr().expect("addr"),
            page: Arc::new(std::sync::Mutex::new((status, body))),
            hits: Arc::default(),
        };
        let (page, hits) = (server.page.clone(), server.hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, page, hits) = (acceptor.clone(), page.clone(), hits.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = *page.lock().expect("page");
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        server
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn custom_error_pages_come_over_https_and_are_retried_and_refreshed() {
    let ca = Ca::new();
    let pages = PageServer::start(&ca, 500, "not yet").await;
    let settings = AppSettings {
        error_page_url: Some(format!(
            "https://localhost:{}/error.html",
            pages.addr.port()
        )),
        ..AppSettings::default()
    };
    // No dynos: every request is an H14 with the error page.
    let sy = Switchyard::new()
        .app(AppSpec::new("demo").settings(settings))
        .pages(Duration::from_millis(300), ca.client(&[]))
        .start()
        .await;
    let served = || async {
        let r = crate::support::get(sy.addr, "demo.localhost", "/", &[]).await;
        assert_eq!(r.status, 503);
        r.body
    };
    // The page server fails first: the default page is served, and the URL
    // is tried again later rather than given up.
    assert!(served().await.contains("Application Error"));
    crate::eventually("pages.hits() == 1", || pages.hits() == 1).await;
    *pages.page.lock().expect("page") = (200, "<h1>ours, v1</h1>");
    let until = |want: &'static str| {
        crate::eventually_some("the page served is the one wanted", move || async move {
            (served().await == want).then_some(())
        })
    };
    until("<h1>ours, v1</h1>").await;
    // A newer page replaces the cached one after the refresh interval.
    *pages.page.lock().expect("page") = (200, "<h1>ours, v2</h1>");
    until("<h1>ours, v2</h1>").await;
    // A failing refresh keeps the last good page.
    *pages.page.lock().expect("page") = (503, "down");
    // Two failed refreshes: the second starts only after the first has
    // ended, so by then one failure has been taken in.
    let before = pages.hits();
    crate::eventually_some(
        "two failed refreshes, the last good page still served",
        || async {
            assert_eq!(served().await, "<h1>ours, v2</h1>");
            (pages.hits() >= before + 2).then_some(())
        },
    )
    .await;
    assert_eq!(served().await, "<h1>ours, v2</h1>");
}
