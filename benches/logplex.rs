//! Logplex micro-benchmarks, each next to the obvious baseline:
//!
//! - **syslog parsing** of RFC 5424 and RFC 3164 lines with
//!   [`logplex::message::parse`] (priority check, UTF-8, BOM, procid) against
//!   calling `syslog_loose` directly, which it wraps;
//! - **stream framing** (RFC 6587 octet counting, as Heroku's drains and
//!   senders use) with [`logplex::frame::Framer`] against splitting the same
//!   bytes on `\n` (what newline framing would cost, and wrong for messages
//!   containing newlines);
//! - **logplex-1 body decoding** with [`logplex::frame::logplex_body`];
//! - **frame encoding** with [`logplex::LogLine::write_frame`] against one
//!   `format!` of the same fields.
//!
//! Run with `cargo bench --bench logplex`; numbers are in `BENCHMARKS.md`.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use logplex::frame::{logplex_body, Framer};
use logplex::LogLine;

const RFC5424: &str = "<190>1 2026-11-22T10:00:00.123456+00:00 host app web.1 - - \
    Started GET \"/products/42\" for 203.0.113.7 at 2026-11-22 10:00:00 +0000";
const RFC5424_SD: &str = "<158>1 2026-11-22T10:00:00.123456+00:00 host heroku router - \
    [meta sequenceId=\"1\"] at=info method=GET path=\"/\" host=demo.localhost \
    request_id=5f3c9a2e dyno=web.1 connect=0ms service=18ms status=200 bytes=1432";
const RFC3164: &str =
    "<190>Nov 22 10:00:00 host app[web.1]: Started GET \"/products/42\" for 203.0.113.7";

fn syslog_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("syslog_parse");
    group.throughput(Throughput::Elements(1));
    for (name, line) in [
        ("rfc5424", RFC5424),
        ("rfc5424_sd", RFC5424_SD),
        ("rfc3164", RFC3164),
    ] {
        group.bench_function(format!("switchyard/{name}"), |b| {
            b.iter(|| logplex::message::parse(black_box(line.as_bytes())).is_ok())
        });
        group.bench_function(format!("syslog_loose/{name}"), |b| {
            b.iter(|| {
                let m = syslog_loose::parse_message(black_box(line), syslog_loose::Variant::Either);
                m.msg.len()
            })
        });
    }
    group.finish();
}

/// `count` octet-counted RFC 5424 frames, as a TCP sender writes them.
fn octet_stream(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        let msg = format!("{RFC5424} #{i}");
        out.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
    }
    out
}

/// The same lines, newline-framed.
fn newline_stream(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..count {
        out.extend_from_slice(format!("{RFC5424} #{i}\n").as_bytes());
    }
    out
}

fn framing(c: &mut Criterion) {
    const LINES: usize = 1000;
    let mut group = c.benchmark_group("frame_decode");
    group.throughput(Throughput::Elements(LINES as u64));
    let octets = octet_stream(LINES);
    let lines = newline_stream(LINES);
    group.bench_function("switchyard_framer_octet_counted", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&octets[..]);
            let mut framer = Framer::new(10_240);
            let mut n = 0usize;
            while let Some(frame) = framer.next_frame(&mut buf) {
                n += frame.map(|f| f.len()).unwrap_or(0);
            }
            n
        })
    });
    group.bench_function("switchyard_framer_newline", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&lines[..]);
            let mut framer = Framer::new(10_240);
            let mut n = 0usize;
            while let Some(frame) = framer.next_frame(&mut buf) {
                n += frame.map(|f| f.len()).unwrap_or(0);
            }
            n
        })
    });
    group.bench_function("baseline_split_newline", |b| {
        b.iter(|| {
            black_box(&lines[..])
                .split(|&b| b == b'\n')
                .map(<[u8]>::len)
                .sum::<usize>()
        })
    });
    group.bench_function("switchyard_logplex_body", |b| {
        b.iter(|| {
            logplex_body(black_box(&octets[..]), 10_240)
                .map(|f| f.len())
                .unwrap_or(0)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("frame_encode");
    group.throughput(Throughput::Elements(1));
    let line = LogLine::now(
        logplex::message::PRI_APP,
        "app",
        "web.1",
        "Started GET \"/products/42\" for 203.0.113.7 at 2026-11-22 10:00:00 +0000",
    );
    let mut out = Vec::with_capacity(512);
    group.bench_function("switchyard_write_frame", |b| {
        b.iter(|| {
            out.clear();
            black_box(&line).write_frame("host", true, &mut out);
            out.len()
        })
    });
    let stamp = line.timestamp();
    group.bench_function("baseline_format_prestamped", |b| {
        b.iter(|| {
            let l = black_box(&line);
            let body = format!(
                "<{}>1 {} host {} {} - - {}\n",
                l.pri(),
                stamp,
                l.source(),
                l.process(),
                l.msg()
            );
            format!("{} {body}", body.len()).len()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = syslog_parse, framing
}
criterion_main!(benches);
