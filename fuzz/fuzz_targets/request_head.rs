//! The router's request validation and host → route decision on arbitrary
//! bytes: once through the `router::fuzzing` entry point (httparse, then
//! `validate::check` and the table lookup), and once through hyper's real
//! HTTP/1.1 server parser — the one the router listens with, same header
//! limit — with every request it yields checked, looked up and its body
//! (chunked or not) read to the end.

#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use router::{AppSpec, Limits, RouteTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::builder()
            .app(AppSpec::new("demo").domain("*.example.com"))
            .build()
            .expect("table")
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

async fn handle(req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let limits = Limits {
        max_body: Some(1024),
        ..Limits::default()
    };
    let _ = router::validate::check(&req, &limits);
    let (parts, body) = req.into_parts();
    if let Some(host) = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let _ = table().lookup(host);
    }
    let _ = router::headers::request_id(&parts.headers);
    let _ = body.collect().await;
    Ok(Response::new(Empty::new()))
}

fuzz_target!(|data: &[u8]| {
    router::fuzzing::request_head(data);
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let conn = http1::Builder::new()
            .max_headers(1000)
            .serve_connection(TokioIo::new(server), service_fn(handle));
        let (mut rx, mut tx) = tokio::io::split(client);
        let talk = async move {
            let _ = tx.write_all(data).await;
            let _ = tx.shutdown().await;
            let mut out = Vec::new();
            let _ = rx.read_to_end(&mut out).await;
        };
        let _ = tokio::join!(conn, talk);
    });
});
