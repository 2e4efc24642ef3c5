//! Entry points for the fuzz targets in `fuzz/` (not a public API).
//!
//! Each function takes arbitrary bytes, must never panic, and exercises the
//! same code the router runs on untrusted input.

use std::sync::OnceLock;

use crate::settings::Limits;
use crate::table::{AppSpec, RouteTable};
use crate::tls::{CertSpec, Certs};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::builder()
            .app(
                AppSpec::new("demo")
                    .domain("www.example.com")
                    .domain("*.example.com"),
            )
            .app(AppSpec::new("api").domain("api.example.com"))
            .build()
            .unwrap_or_default()
    })
}

fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let specs: Vec<CertSpec> =
            crate::tls::self_signed(&["www.example.com".into(), "*.example.com".into()])
                .map(|(chain_pem, key_pem)| {
                    vec![CertSpec {
                        id: "fuzz".into(),
                        domains: Vec::new(),
                        chain_pem,
                        key_pem,
                    }]
                })
                .unwrap_or_default();
        Certs::build(&specs)
    })
}

/// Parses `data` as an HTTP/1.1 request head (as hyper would accept it),
/// then runs the router's checks and host → app decision on it.
pub fn request_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let mut builder = http::Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let _ = crate::validate::check(&request, &Limits::default());
    let (parts, ()) = request.into_parts();
    let _ = crate::headers::request_id(&parts.headers);
    if let Some(host) = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let _ = table().lookup(host);
    }
}

/// Runs host matching and SNI certificate lookup on `data` as a name.
pub fn host(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = table().lookup(name);
        let _ = certs().lookup(name);
    }
}

/// Parses `data` as a dyno's response the way [`crate::upstream`] reads
/// it: the first byte picks whether the request was `HEAD` and how large
/// the reads are; the rest arrives a read at a time, the head first and
/// then a chunked or length-delimited body, until it ends or fails.
pub fn dyno_response(data: &[u8]) {
    use crate::upstream::codec::{parse_head, Chunk, Chunked, Framing};
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let head_request = knobs & 1 == 1;
    let step = usize::from(knobs >> 1).max(1);
    let mut reads = rest.chunks(step);
    let mut buf = bytes::BytesMut::new();
    let head = loop {
        match parse_head(&mut buf, head_request) {
            Ok(Some(head)) => break head,
            Ok(None) => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => return,
            },
            Err(_) => return,
        }
    };
    match head.framing {
        Framing::Chunked => {
            let mut decoder = Chunked::default();
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Chunk::Data(d)) => assert!(!d.is_empty(), "an empty data chunk"),
                    Ok(Chunk::More) => match reads.next() {
                        Some(read) => buf.extend_from_slice(read),
                        None => return,
                    },
                    Ok(Chunk::End) => {
                        assert!(decoder.is_done());
                        return;
                    }
                    Err(_) => return,
                }
            }
        }
        Framing::Length(n) => assert!(n > 0, "an empty body is Framing::Empty"),
        Framing::Empty | Framing::Close => {}
    }
}
