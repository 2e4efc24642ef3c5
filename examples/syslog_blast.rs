//! A syslog sender for the logplex throughput benchmark.
//!
//! Opens `--connections` TCP connections to `--target` and sends `--lines`
//! octet-counted RFC 5424 frames over them (RFC 6587 `<len> <frame>`, no
//! trailing newline inside the frame), as fast as the receiver takes them
//! or at `--rate` lines per second in total. APP-NAME is `--token`: for
//! Switchyard the app's log token (`t.<uuid>`), which logplex routes by.
//!
//! Each frame looks like
//!
//! ```text
//! <190>1 2026-11-23T10:00:00.000000+00:00 bench t.TOKEN web.1 - - seq=0000000042 at=info method=GET path="/" …
//! ```
//!
//! with `seq` the frame's number on its connection. The frames of a chunk
//! are laid out once and only their `seq` digits are rewritten, so the
//! sender costs little more than its `write` calls.
//!
//! Prints one JSON object: lines and bytes sent, and the wall-clock
//! (`SystemTime`, nanoseconds since the epoch) instants of the first write
//! and of the last write's return, which the harness compares with the
//! receiver's timestamps.
//!
//! ```text
//! cargo run --release --example syslog_blast -- --target 127.0.0.1:6001 --lines 1000000 --token t.…
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(about = "Send octet-counted RFC 5424 syslog frames over TCP as fast as possible")]
struct Args {
    /// Where to send (a syslog TCP listener).
    #[arg(long)]
    target: std::net::SocketAddr,
    /// Lines to send in total, spread evenly over the connections.
    #[arg(long, default_value_t = 1_000_000)]
    lines: u64,
    /// TCP connections, each sending its share.
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// APP-NAME of every frame (logplex routes by this token).
    #[arg(long, default_value = "app")]
    token: String,
    /// PROCID of every frame.
    #[arg(long, default_value = "web.1")]
    procid: String,
    /// HOSTNAME of every frame.
    #[arg(long, default_value = "bench")]
    hostname: String,
    /// Bytes of MSG per frame (at least the `seq=…` field).
    #[arg(long, default_value_t = 120)]
    msg_bytes: usize,
    /// Frames per write.
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Lines per second in total; 0 sends as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

const SEQ_DIGITS: usize = 10;
const FILLER: &str = "at=info method=GET path=\"/api/items?page=2\" host=demo.localhost \
request_id=8601b555-6a83-4c12-8269-97c8e32cdb22 fwd=\"127.0.0.1\" dyno=web.1 connect=1ms \
service=18ms status=200 bytes=213 protocol=http ";

fn epoch_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// RFC 3339 UTC with microseconds, from days-since-epoch arithmetic (no
/// date crate needed for one timestamp).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// A chunk of `n` frames and the offsets of their `seq` digits.
fn layout(args: &Args, timestamp: &str, n: usize) -> (Vec<u8>, Vec<usize>) {
    let head = format!(
        "<190>1 {timestamp} {} {} {} - - seq=",
        args.hostname, args.token, args.procid
    );
    let fill_len = args.msg_bytes.saturating_sub(4 + SEQ_DIGITS + 1);
    let filler: String = FILLER.chars().cycle().take(fill_len).collect();
    let body_len = head.len() + SEQ_DIGITS + 1 + filler.len();
    let mut buf = Vec::with_capacity(n * (body_len + 8));
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        buf.extend_from_slice(body_len.to_string().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(head.as_bytes());
        offsets.push(buf.len());
        buf.extend_from_slice(&[b'0'; SEQ_DIGITS]);
        buf.push(b' ');
        buf.extend_from_slice(filler.as_bytes());
    }
    (buf, offsets)
}

fn stamp(buf: &mut [u8], offsets: &[usize], first: u64) {
    for (i, &at) in offsets.iter().enumerate() {
        let mut n = first + i as u64;
        for d in buf[at..at + SEQ_DIGITS].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
}

async fn send(
    args: &Args,
    mut stream: TcpStream,
    lines: u64,
    timestamp: &str,
    rate: f64,
    start: Instant,
) -> std::io::Result<u64> {
    let chunk = args.chunk.max(1) as u64;
    let (mut buf, offsets) = layout(args, timestamp, chunk as usize);
    let mut sent = 0u64;
    let mut bytes = 0u64;
    while sent < lines {
        let n = chunk.min(lines - sent);
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        stamp(&mut buf, &offsets, sent);
        // Every frame has the same length (fixed-width `seq`).
        let end = buf.len() / chunk as usize * n as usize;
        stream.write_all(&buf[..end]).await?;
        bytes += end as u64;
        sent += n;
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(bytes)
}

/// One thread is plenty: the sender only issues `write` calls, and the
/// cores are the router's.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("syslog_blast: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let args = std::sync::Arc::new(args);
    let k = args.connections.max(1);
    let mut streams = Vec::new();
    for _ in 0..k {
        let s = TcpStream::connect(args.target).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let timestamp = rfc3339(SystemTime::now());
    let per_conn_rate = args.rate / k as f64;
    let wall_start = SystemTime::now();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let share = args.lines / k + u64::from((i as u64) < args.lines % k);
        let args = args.clone();
        let timestamp = timestamp.clone();
        tasks.spawn(async move {
            send(&args, stream, share, &timestamp, per_conn_rate, start)
                .await
                .map(|bytes| (share, bytes))
        });
    }
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(done) = tasks.join_next().await {
        let (l, b) = done.map_err(std::io::Error::other)??;
        lines += l;
        bytes += b;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let wall_end = SystemTime::now();
    println!(
        "{{\"sent\":{lines},\"bytes\":{bytes},\"connections\":{k},\"start_ns\":{},\"end_ns\":{},\"elapsed_s\":{elapsed:.6},\"lines_per_s\":{:.0}}}",
        epoch_ns(wall_start),
        epoch_ns(wall_end),
        lines as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456+00:00");
    }
}
