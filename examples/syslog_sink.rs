//! A counting syslog receiver for the logplex throughput benchmark: the
//! drain endpoint.
//!
//! Listens on `--ports` TCP ports on 127.0.0.1 (port 0: the kernel picks
//! them; `--listen ADDR` names them instead) and prints one
//! `listening index=I addr=127.0.0.1:PORT` line per port. Every connection
//! is read to its end and cut into frames the way RFC 6587 allows either
//! per frame: octet-counted (`<len> <msg>`, what Switchyard's drains and
//! rsyslog's omfwd with `TCP_Framing="octet-counted"` send) or one line
//! ended by `\n`. Complete frames are counted per port, with the wall-clock
//! instants (`SystemTime`, nanoseconds since the epoch) of the first and the
//! last one. Logplex's L10 lines (`<172>… Error L10 (output buffer
//! overflow): N messages dropped …`) are counted apart, with the sum of
//! their `N`, and not as frames.
//!
//! Output on stdout, one JSON object per line: a status every `--report-ms`
//! while counts change, and `"done":true` once every port has `--expect`
//! frames. Commands on stdin: `reset` zeroes every counter (between
//! benchmark runs, without dropping the senders' connections), `report`
//! prints the status now.
//!
//! ```text
//! cargo run --release --example syslog_sink -- --ports 10 --expect 1000000
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "Count syslog frames (octet-counted or newline) received on TCP ports")]
struct Args {
    /// Ports to open on 127.0.0.1, chosen by the kernel.
    #[arg(long, default_value_t = 0)]
    ports: usize,
    /// Addresses to listen on (repeatable), in addition to `--ports`.
    #[arg(long)]
    listen: Vec<std::net::SocketAddr>,
    /// Print `"done":true` once every port has this many frames (0: never).
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// Milliseconds between status lines (printed only when counts change;
    /// 0: only on `report`).
    #[arg(long, default_value_t = 1000)]
    report_ms: u64,
    /// Largest frame accepted; a connection sending a longer one is closed.
    #[arg(long, default_value_t = 1 << 20)]
    max_frame: usize,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Counters of one port.
#[derive(Debug, Default)]
struct Port {
    port: u16,
    frames: AtomicU64,
    bytes: AtomicU64,
    l10: AtomicU64,
    l10_dropped: AtomicU64,
    bad: AtomicU64,
    conns: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
    reached: AtomicBool,
}

struct Shared {
    ports: Vec<Arc<Port>>,
    expect: u64,
    reached: AtomicUsize,
    /// Bumped by every counted frame batch, so the reporter prints only on change.
    changes: AtomicU64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one scan of a buffer found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Scan {
    frames: u64,
    l10: u64,
    l10_dropped: u64,
    consumed: usize,
}

/// Frames at the start of `buf`: complete ones are counted and consumed,
/// an incomplete one is left. `Err` when a frame is longer than `max`.
fn scan(buf: &[u8], max: usize) -> Result<Scan, ()> {
    let mut s = Scan::default();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if matches!(rest[0], b'\n' | b'\r' | 0) {
            at += 1;
            continue;
        }
        if rest[0].is_ascii_digit() && rest[0] != b'0' {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            match rest.get(digits) {
                None if digits <= 9 => break,
                Some(b' ') if digits <= 9 => {
                    let len = rest[..digits]
                        .iter()
                        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
                    if len > max {
                        return Err(());
                    }
                    let Some(frame) = rest.get(digits + 1..digits + 1 + len) else {
                        break;
                    };
                    count(&mut s, frame);
                    at += digits + 1 + len;
                    continue;
                }
                _ => {}
            }
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                count(&mut s, &rest[..nl]);
                at += nl + 1;
            }
            None if rest.len() > max => return Err(()),
            None => break,
        }
    }
    s.consumed = at;
    Ok(s)
}

const L10: &[u8] = b"Error L10 (output buffer overflow): ";

fn count(s: &mut Scan, frame: &[u8]) {
    if frame.starts_with(b"<172>") {
        if let Some(i) = frame.windows(L10.len()).position(|w| w == L10) {
            s.l10 += 1;
            s.l10_dropped += frame[i + L10.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |n, d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
            return;
        }
    }
    s.frames += 1;
}

async fn read_conn(mut stream: TcpStream, port: Arc<Port>, shared: Arc<Shared>, max: usize) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            if buf.len() >= max + 64 * 1024 {
                port.bad.fetch_add(1, Ordering::Relaxed);
                return;
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let Ok(s) = scan(&buf[..filled], max) else {
            port.bad.fetch_add(1, Ordering::Relaxed);
            return;
        };
        buf.copy_within(s.consumed..filled, 0);
        filled -= s.consumed;
        if s.frames + s.l10 == 0 {
            continue;
        }
        let t = now_ns();
        let _ = port
            .first_ns
            .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
        port.last_ns.fetch_max(t, Ordering::Relaxed);
        port.bytes.fetch_add(s.consumed as u64, Ordering::Relaxed);
        port.l10.fetch_add(s.l10, Ordering::Relaxed);
        port.l10_dropped.fetch_add(s.l10_dropped, Ordering::Relaxed);
        let frames = port.frames.fetch_add(s.frames, Ordering::Relaxed) + s.frames;
        shared.changes.fetch_add(1, Ordering::Relaxed);
        if shared.expect > 0
            && frames >= shared.expect
            && !port.reached.swap(true, Ordering::AcqRel)
        {
            let all = shared.reached.fetch_add(1, Ordering::AcqRel) + 1;
            if all == shared.ports.len() {
                println!("{}", status(&shared, true));
            }
        }
    }
}

fn status(shared: &Shared, done: bool) -> String {
    let mut out = format!("{{\"t_ns\":{},\"done\":{done},\"ports\":[", now_ns());
    let mut total = 0;
    for (i, p) in shared.ports.iter().enumerate() {
        let frames = p.frames.load(Ordering::Relaxed);
        total += frames;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"port\":{},\"frames\":{frames},\"bytes\":{},\"l10\":{},\"l10_dropped\":{},\"bad\":{},\"conns\":{},\"first_ns\":{},\"last_ns\":{}}}",
            p.port,
            p.bytes.load(Ordering::Relaxed),
            p.l10.load(Ordering::Relaxed),
            p.l10_dropped.load(Ordering::Relaxed),
            p.bad.load(Ordering::Relaxed),
            p.conns.load(Ordering::Relaxed),
            p.first_ns.load(Ordering::Relaxed),
            p.last_ns.load(Ordering::Relaxed),
        ));
    }
    out.push_str(&format!("],\"frames\":{total}}}"));
    out
}

fn reset(shared: &Shared) {
    for p in &shared.ports {
        for c in [
            &p.frames,
            &p.bytes,
            &p.l10,
            &p.l10_dropped,
            &p.bad,
            &p.first_ns,
            &p.last_ns,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        p.reached.store(false, Ordering::Relaxed);
    }
    shared.reached.store(0, Ordering::Relaxed);
}

async fn accept(listener: TcpListener, port: Arc<Port>, shared: Arc<Shared>, max: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                port.conns.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(read_conn(stream, port.clone(), shared.clone(), max));
            }
            Err(e) => {
                eprintln!("syslog_sink: accept on {}: {e}", port.port);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let mut addrs = args.listen.clone();
    addrs.extend((0..args.ports).map(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0))));
    if addrs.is_empty() {
        addrs.push(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        println!("listening index={i} addr={local}");
        ports.push(Arc::new(Port {
            port: local.port(),
            ..Port::default()
        }));
        listeners.push(l);
    }
    let shared = Arc::new(Shared {
        ports,
        expect: args.expect,
        reached: AtomicUsize::new(0),
        changes: AtomicU64::new(0),
    });
    for (l, p) in listeners.into_iter().zip(shared.ports.iter()) {
        tokio::spawn(accept(l, p.clone(), shared.clone(), args.max_frame));
    }
    if args.report_ms > 0 {
        let shared = shared.clone();
        let every = Duration::from_millis(args.report_ms);
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(every).await;
                let now = shared.changes.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    println!("{}", status(&shared, false));
                }
            }
        });
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "reset" => {
                reset(&shared);
                println!("{{\"reset\":true}}");
            }
            "report" => println!("{}", status(&shared, false)),
            "" => {}
            other => eprintln!("syslog_sink: unknown command {other:?} (reset, report)"),
        }
    }
    // Standard input closed: keep counting until killed.
    std::future::pending::<()>().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("syslog_sink: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syslog_sink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_both_framings_and_l10_lines() {
        let l10 = b"<172>1 - d.x heroku logplex - - Error L10 (output buffer overflow): 42 messages dropped since 2026-11-23T00:00:00+00:00.";
        let mut input = format!("5 hello<13>a line\r\n{} ", l10.len()).into_bytes();
        input.extend_from_slice(l10);
        input.extend_from_slice(b"\n\n12 <13>1 partia");
        let s = scan(&input, 1000).expect("scans");
        assert_eq!((s.frames, s.l10, s.l10_dropped), (2, 1, 42));
        assert_eq!(&input[s.consumed..], b"12 <13>1 partia");
        assert!(scan(b"99999 x", 10).is_err());
        assert!(scan(&[b'x'; 20], 10).is_err());
    }
}
