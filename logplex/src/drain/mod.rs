//! Drains: one task per drain pushing the channel's lines to a `syslog://`,
//! `syslog+tls://` or `https://` endpoint, behind a bounded buffer.
//!
//! See [`buffer`] for the accounting rules: for every drain,
//! `accepted = delivered + dropped` once it is idle, and every dropped line
//! is reported in an L10 line.

pub mod buffer;
pub mod https;
pub mod syslog;
pub mod tls;

use std::sync::{Arc, Weak};
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;
use url::Url;

use crate::channel::Channel;
use crate::config::DrainSpec;
use crate::message::{self, LogLine, PRI_CERT, PRI_LOSS};
use crate::settings::LogplexSettings;
pub use buffer::{Batch, Counts, DrainBuffer, Loss};

/// The most of a drain URL or a peer's error text a log line carries.
pub const LOGGED_MAX: usize = 200;

/// A drain URL as log lines show it: scheme, host, port and path, without
/// credentials, query or fragment (where tokens live), cut to
/// [`LOGGED_MAX`] characters so a retry loop never logs kilobytes.
pub fn redacted_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.has_host() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            clipped(url.as_str())
        }
        _ => format!("(not a drain URL, {} bytes)", raw.len()),
    }
}

/// `text` cut to [`LOGGED_MAX`] characters, marked with `…` when cut.
pub fn clipped(text: &str) -> String {
    match text.char_indices().nth(LOGGED_MAX) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Where a drain delivers, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `syslog://host:port` (default port 601) or `syslog+tls://host:port`
    /// (default 6514; `#insecure` skips certificate checks).
    Syslog {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
        /// TLS, and whether it is insecure.
        tls: Option<bool>,
    },
    /// `https://[user:pass@]host[:port]/path` (or `http://`).
    Https {
        /// The URL, fragment removed.
        url: Url,
        /// TLS (https) or plain (http).
        tls: bool,
        /// `#insecure`.
        insecure: bool,
    },
}

impl Target {
    /// Parses a drain URL.
    pub fn parse(raw: &str) -> Result<Target, String> {
        let mut url = Url::parse(raw).map_err(|e| format!("invalid drain URL: {e}"))?;
        let insecure = url.fragment() == Some("insecure");
        url.set_fragment(None);
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("drain URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        match url.scheme() {
            "syslog" | "syslog+tcp" | "tcpsyslog" => Ok(Target::Syslog {
                host,
                port: url.port().unwrap_or(601),
                tls: None,
            }),
            "syslog+tls" => Ok(Target::Syslog {
                host,
                port: url.port().unwrap_or(6514),
                tls: Some(insecure),
            }),
            "https" | "http" => Ok(Target::Https {
                tls: url.scheme() == "https",
                url,
                insecure,
            }),
            other => Err(format!("unsupported drain scheme `{other}`")),
        }
    }

    /// `syslog`, `syslog+tls` or `https` (a bounded metrics label).
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Syslog { tls: None, .. } => "syslog",
            Target::Syslog { tls: Some(_), .. } => "syslog+tls",
            Target::Https { tls: true, .. } => "https",
            Target::Https { tls: false, .. } => "http",
        }
    }
}

/// What a drain's sender needs: its buffer, identity and settings.
#[derive(Debug)]
pub struct Ctx {
    /// The buffer between channel and sender.
    pub buffer: Arc<DrainBuffer>,
    /// Drain id (metrics label).
    pub id: String,
    /// `d.<uuid>`.
    pub token: String,
    /// Transport (metrics label).
    pub transport: &'static str,
    /// Settings.
    pub settings: Arc<LogplexSettings>,
    /// The drained channel, for lines to the app's own stream (L10, L14).
    pub channel: Weak<Channel>,
    /// The drain's URL, for L14 lines.
    pub url: String,
    /// The drain's `logplex_drain_*_lines_total` counters, registered once:
    /// looking a labelled counter up in the recorder on every line cost more
    /// than the buffer push itself.
    pub counters: DrainCounters,
}

/// Handles to one drain's counters (`drain` and `transport` labels).
#[derive(Debug, Clone)]
pub struct DrainCounters {
    accepted: metrics::Counter,
    delivered: metrics::Counter,
    dropped: metrics::Counter,
    reported: metrics::Counter,
}

impl DrainCounters {
    /// Registers the counters of drain `id` with the installed recorder.
    pub fn new(id: &str, transport: &'static str) -> Self {
        let labels = [
            metrics::Label::new(
                "drain",
                metrics::SharedString::from_shared(Arc::<str>::from(id)),
            ),
            metrics::Label::new("transport", transport),
        ];
        Self {
            accepted: metrics::counter!("logplex_drain_accepted_lines_total", labels.iter()),
            delivered: metrics::counter!("logplex_drain_delivered_lines_total", labels.iter()),
            dropped: metrics::counter!("logplex_drain_dropped_lines_total", labels.iter()),
            reported: metrics::counter!("logplex_drain_reported_lines_total", labels.iter()),
        }
    }
}

impl Ctx {
    /// Settles a delivered batch.
    pub fn delivered(&self, batch: Batch) {
        let n = batch.lines.len() as u64;
        let reported = batch.loss.map_or(0, |l| l.count);
        if self.buffer.delivered(batch) {
            self.counters.delivered.increment(n);
            self.counters.reported.increment(reported);
        }
    }

    /// Settles a batch given up on.
    pub fn failed(&self, batch: Batch) {
        let n = batch.lines.len() as u64;
        if self.buffer.failed(batch) {
            self.counters.dropped.increment(n);
        }
    }

    /// The L10 line of a batch, if it has one.
    pub fn loss_line(&self, batch: &Batch) -> Option<LogLine> {
        batch.loss.map(|loss| {
            LogLine::now(
                PRI_LOSS,
                "heroku",
                "logplex",
                &message::l10_in_drain(loss.count, loss.since),
            )
        })
    }

    /// Writes a `heroku[logplex]` line to the app's own stream (history and
    /// tails, not drains); false if the channel is gone.
    pub fn tell_app(&self, pri: u8, text: &str) -> bool {
        let Some(channel) = self.channel.upgrade() else {
            return false;
        };
        channel.publish_local(&Arc::new(LogLine::now(pri, "heroku", "logplex", text)));
        true
    }

    /// Reports a failed TLS handshake with the drain in the app's stream as
    /// L14 if the certificate was the problem. Returns whether it was.
    pub fn tls_failed(&self, error: &std::io::Error) -> bool {
        let Some(rustls::Error::InvalidCertificate(why)) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return false;
        };
        let why = format!("{why:?}");
        // The stream is read by every tail and drain: no credentials in it.
        self.tell_app(PRI_CERT, &message::l14(&why, &redacted_url(&self.url)));
        true
    }

    /// Full-jitter exponential backoff for the `attempt`-th retry (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let min = self.settings.drain_backoff_min;
        let max = self.settings.drain_backoff_max.max(min);
        let ceiling = min
            .saturating_mul(1u32 << attempt.clamp(1, 16).saturating_sub(1))
            .min(max);
        let ms = ceiling.as_millis().max(1) as u64;
        let jittered = rand::rng().random_range(ms / 2..=ms);
        Duration::from_millis(jittered)
    }
}

/// A running drain: its spec, buffer and tasks. Dropping it stops the tasks
/// and counts what was left as dropped.
#[derive(Debug)]
pub struct Drain {
    /// The drain as configured.
    pub spec: DrainSpec,
    /// The app it drains.
    pub app_id: String,
    ctx: Arc<Ctx>,
    /// When its sender may connect: `None` while it is held (see
    /// [`Drain::release`]), else the wait from the release.
    gate: tokio::sync::watch::Sender<Option<Duration>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Waits until `gate` opens, then for the wait it was opened with. False
/// if the drain went first.
async fn opened(mut gate: tokio::sync::watch::Receiver<Option<Duration>>) -> bool {
    let wait = match gate.wait_for(Option::is_some).await {
        Ok(open) => open.unwrap_or_default(),
        Err(_) => return false,
    };
    tokio::time::sleep(wait).await;
    true
}

impl Drain {
    /// Starts a drain of `channel` on the current tokio runtime, else on
    /// `runtime`.
    ///
    /// Its sender connects after `hold`; with `None` it is held until
    /// [`release`](Self::release)d. Lines are buffered meanwhile (within
    /// the buffer's bound; what overflows is counted and reported as
    /// always).
    pub fn start(
        app_id: &str,
        spec: &DrainSpec,
        settings: &Arc<LogplexSettings>,
        channel: Weak<Channel>,
        runtime: Option<&tokio::runtime::Handle>,
        hold: Option<Duration>,
    ) -> Result<Drain, String> {
        let target = Target::parse(&spec.url)?;
        let ctx = Arc::new(Ctx {
            buffer: Arc::new(DrainBuffer::new(settings.drain_buffer_lines)),
            id: spec.id.clone(),
            token: spec.token.clone(),
            transport: target.transport(),
            settings: settings.clone(),
            channel,
            url: spec.url.clone(),
            counters: DrainCounters::new(&spec.id, target.transport()),
        });
        let runtime = tokio::runtime::Handle::try_current()
            .ok()
            .or_else(|| runtime.cloned())
            .ok_or_else(|| "drains need a tokio runtime".to_string())?;
        let (gate, gate_rx) = tokio::sync::watch::channel(hold);
        let sender = match target {
            Target::Syslog { host, port, tls } => {
                let tls = match tls {
                    Some(insecure) => Some(
                        tls::client_config(settings, insecure)
                            .map_err(|e| format!("drain TLS: {e}"))?,
                    ),
                    None => None,
                };
                let ctx = ctx.clone();
                runtime.spawn(async move {
                    if opened(gate_rx).await {
                        syslog::run(ctx, host, port, tls).await
                    }
                })
            }
            Target::Https { url, tls, insecure } => {
                let tls = if tls {
                    Some(
                        tls::client_config(settings, insecure)
                            .map_err(|e| format!("drain TLS: {e}"))?,
                    )
                } else {
                    None
                };
                let ctx = ctx.clone();
                runtime.spawn(async move {
                    if opened(gate_rx).await {
                        https::run(ctx, url, tls).await
                    }
                })
            }
        };
        let reporter = runtime.spawn(report_loss(ctx.clone()));
        Ok(Drain {
            spec: spec.clone(),
            app_id: app_id.to_string(),
            ctx,
            gate,
            tasks: vec![sender, reporter],
        })
    }

    /// Lets a held drain's sender connect after `after` (nothing for a
    /// drain that is not held).
    pub fn release(&self, after: Duration) {
        self.gate.send_if_modified(|gate| {
            let held = gate.is_none();
            if held {
                *gate = Some(after);
            }
            held
        });
    }

    /// Whether it is held: it buffers lines and sends none.
    pub fn is_held(&self) -> bool {
        self.gate.borrow().is_none()
    }

    /// Hands the drain one line. Never waits.
    pub fn push(&self, line: LogLine) {
        self.push_batch(std::slice::from_ref(&line));
    }

    /// Hands the drain lines in order, with one buffer lock and one wake-up
    /// of its sender. Never waits.
    pub fn push_batch(&self, lines: &[LogLine]) {
        let Some(dropped) = self.ctx.buffer.push_batch(lines) else {
            return;
        };
        self.ctx.counters.accepted.increment(lines.len() as u64);
        if dropped > 0 {
            self.ctx.counters.dropped.increment(dropped);
        }
    }

    /// The drain's counters.
    pub fn counts(&self) -> Counts {
        self.ctx.buffer.counts()
    }

    /// `syslog`, `syslog+tls`, `https` or `http`.
    pub fn transport(&self) -> &'static str {
        self.ctx.transport
    }

    /// The buffer (for flushing).
    pub fn buffer(&self) -> &Arc<DrainBuffer> {
        &self.ctx.buffer
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let lost = self.ctx.buffer.close();
        if lost > 0 {
            self.ctx.counters.dropped.increment(lost);
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Tells the app's stream (history and tails, not drains, so that two
/// failing drains cannot feed each other) that a drain is losing lines, at
/// most once per `loss_report_interval`.
async fn report_loss(ctx: Arc<Ctx>) {
    loop {
        ctx.buffer.loss_begins().await;
        if let Some(loss) = ctx.buffer.take_app_loss() {
            let text = message::l10_in_app(&ctx.token, loss.count, loss.since);
            if !ctx.tell_app(PRI_LOSS, &text) {
                return;
            }
        }
        tokio::time::sleep(ctx.settings.loss_report_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drain_urls() {
        assert_eq!(
            Target::parse("syslog://logs.example.com").unwrap(),
            Target::Syslog {
                host: "logs.example.com".into(),
                port: 601,
                tls: None
            }
        );
        assert_eq!(
            Target::parse("syslog+tls://127.0.0.1:7000#insecure").unwrap(),
            Target::Syslog {
                host: "127.0.0.1".into(),
                port: 7000,
                tls: Some(true)
            }
        );
        let Target::Https { url, tls, insecure } =
            Target::parse("https://u:p@example.com/logs?x=1").unwrap()
        else {
            panic!("not https")
        };
        assert!(tls && !insecure);
        assert_eq!(url.path(), "/logs");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn logged_urls_carry_no_secrets_and_stay_short() {
        let huge = format!(
            "https://user:secret@logs.example.com/{}?token=d.1234#insecure",
            "p".repeat(100_000)
        );
        let shown = redacted_url(&huge);
        assert!(shown.starts_with("https://logs.example.com/ppp"), "{shown}");
        assert!(shown.chars().count() <= LOGGED_MAX + 1, "{}", shown.len());
        assert!(!shown.contains("secret") && !shown.contains("user"));
        assert!(!shown.contains("d.1234") && !shown.contains("insecure"));
        assert_eq!(
            redacted_url("syslog+tls://logs.example.com:6514"),
            "syslog+tls://logs.example.com:6514"
        );
        assert_eq!(
            redacted_url("user:secret@host"),
            "(not a drain URL, 16 bytes)"
        );
        assert_eq!(clipped(&"é".repeat(500)).chars().count(), LOGGED_MAX + 1);
    }
}
