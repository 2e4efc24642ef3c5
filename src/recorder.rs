//! The process's metrics recorder.
//!
//! Counters and gauges are `metrics-exporter-prometheus`'s. Histograms are
//! Switchyard's own [`Buckets`]: a request records four of them (duration,
//! connect, service, queue wait), and the exporter's histogram keeps every
//! sample with a timestamp until the next upkeep sorts it into buckets. At
//! 70,000 requests a second that is 1.4 million samples every 5 s, sorted
//! in one burst, a burst that held up requests on a busy core (p99 2.7 ms
//! against 1.5 ms without a recorder, BENCHMARKS.md) besides the clock
//! read and the queue push each sample cost on the request path. A
//! [`Buckets`] counts the sample into its bucket at once, with relaxed
//! atomic adds, and keeps nothing else: recording costs the same at any
//! rate, and a scrape reads the counts.
//!
//! The exposition is the same: `_bucket{le=…}` lines, cumulative, then
//! `le="+Inf"`, `_sum` and `_count`, with the `# HELP` line from
//! `describe_histogram!`, written by the exporter's own formatting
//! helpers. Every histogram in Switchyard measures seconds and takes
//! [`BUCKETS`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{
    sanitize_label_key, sanitize_label_value, sanitize_metric_name, write_help_line,
    write_metric_line, write_type_line,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Upper bounds of the latency buckets, seconds: 1 ms to 60 s.
pub const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// One histogram: a count per bucket (not cumulative; the last is past
/// every bound) and the sum of the samples.
#[derive(Debug, Default)]
pub struct Buckets {
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum, as the bits of an `f64`.
    sum: AtomicU64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let at = BUCKETS
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + value).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
    }
}

impl Buckets {
    /// Cumulative counts, one per bound and then the total.
    fn cumulative(&self) -> [u64; BUCKETS.len() + 1] {
        let mut out = [0; BUCKETS.len() + 1];
        let mut running = 0u64;
        for (slot, count) in out.iter_mut().zip(&self.counts) {
            running += count.load(Ordering::Relaxed);
            *slot = running;
        }
        out
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// What the recorder and its handle share: the histograms and their
/// descriptions.
#[derive(Debug, Default)]
struct Histograms {
    by_key: RwLock<BTreeMap<Key, Arc<Buckets>>>,
    help: Mutex<HashMap<String, String>>,
}

impl Histograms {
    fn register(&self, key: &Key) -> Arc<Buckets> {
        if let Some(found) = self
            .by_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return found.clone();
        }
        self.by_key
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Appends every histogram, grouped by name, in the text exposition
    /// format.
    fn render_into(&self, out: &mut String) {
        let by_key = self.by_key.read().unwrap_or_else(PoisonError::into_inner);
        let help = self.help.lock().unwrap_or_else(PoisonError::into_inner);
        // The family being written: its name as the key has it, sanitized.
        let mut current: Option<(&str, String)> = None;
        for (key, buckets) in by_key.iter() {
            if current.as_ref().map(|(raw, _)| *raw) != Some(key.name()) {
                if current.is_some() {
                    out.push('\n');
                }
                let name = sanitize_metric_name(key.name());
                if let Some(text) = help.get(key.name()) {
                    write_help_line(out, &name, text);
                }
                write_type_line(out, &name, "histogram");
                current = Some((key.name(), name));
            }
            let Some((_, name)) = &current else {
                continue;
            };
            let labels: Vec<String> = key
                .labels()
                .map(|l| {
                    format!(
                        "{}=\"{}\"",
                        sanitize_label_key(l.key()),
                        sanitize_label_value(l.value())
                    )
                })
                .collect();
            let counts = buckets.cumulative();
            for (bound, count) in BUCKETS.iter().zip(counts) {
                write_metric_line(
                    out,
                    name,
                    Some("bucket"),
                    &labels,
                    Some(("le", bound)),
                    count,
                    None,
                );
            }
            let total = counts[BUCKETS.len()];
            write_metric_line(
                out,
                name,
                Some("bucket"),
                &labels,
                Some(("le", "+Inf")),
                total,
                None,
            );
            write_metric_line::<&str, f64>(
                out,
                name,
                Some("sum"),
                &labels,
                None,
                buckets.sum(),
                None,
            );
            write_metric_line::<&str, u64>(out, name, Some("count"), &labels, None, total, None);
        }
        if current.is_some() {
            out.push('\n');
        }
    }
}

/// The recorder: the exporter's for counters and gauges, [`Buckets`] for
/// histograms.
#[derive(Debug)]
pub struct Recorder {
    prometheus: PrometheusRecorder,
    histograms: Arc<Histograms>,
}

impl Recorder {
    /// A recorder and the handle that renders what it records.
    pub fn new() -> (Self, Handle) {
        let prometheus = PrometheusBuilder::new().build_recorder();
        let histograms = Arc::new(Histograms::default());
        let handle = Handle {
            prometheus: prometheus.handle(),
            histograms: histograms.clone(),
        };
        (
            Recorder {
                prometheus,
                histograms,
            },
            handle,
        )
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.prometheus.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.histograms
            .help
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.as_str().to_owned(), description.into_owned());
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.prometheus.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.prometheus.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.histograms.register(key))
    }
}

/// Renders what the [`Recorder`] recorded, and keeps the exporter's
/// upkeep going.
#[derive(Debug, Clone)]
pub struct Handle {
    prometheus: PrometheusHandle,
    histograms: Arc<Histograms>,
}

impl Handle {
    /// Every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = self.prometheus.render();
        self.histograms.render_into(&mut out);
        out
    }

    /// The exporter's periodic housekeeping.
    pub fn run_upkeep(&self) {
        self.prometheus.run_upkeep();
    }
}

/// Installs a [`Recorder`] as the process's recorder, with its upkeep
/// every 5 s on the current runtime.
pub fn install() -> anyhow::Result<Handle> {
    let (recorder, handle) = Recorder::new();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the exposition line that starts with `prefix`.
    fn value(text: &str, prefix: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"));
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no value in {line:?}"))
    }

    #[test]
    fn histograms_render_cumulative_buckets_sum_count_and_help() {
        let (recorder, handle) = Recorder::new();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!("t_duration_seconds", "How long things took.");
            let h = metrics::histogram!("t_duration_seconds", "app" => "a");
            for v in [0.0005, 0.001, 0.003, 0.7, 100.0] {
                h.record(v);
            }
            metrics::histogram!("t_duration_seconds", "app" => "b").record(0.02);
            metrics::counter!("t_things_total").increment(3);
        });
        let text = handle.render();
        assert!(text.contains("# HELP t_duration_seconds How long things took.\n"));
        assert_eq!(
            text.matches("# TYPE t_duration_seconds histogram\n")
                .count(),
            1
        );
        let a = |le: &str| {
            value(
                &text,
                &format!("t_duration_seconds_bucket{{app=\"a\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(a("0.001"), 2.0, "bounds are inclusive");
        assert_eq!(a("0.0025"), 2.0);
        assert_eq!(a("0.005"), 3.0);
        assert_eq!(a("0.5"), 3.0);
        assert_eq!(a("1"), 4.0);
        assert_eq!(a("60"), 4.0);
        assert_eq!(a("+Inf"), 5.0);
        assert_eq!(value(&text, "t_duration_seconds_count{app=\"a\"}"), 5.0);
        let sum = value(&text, "t_duration_seconds_sum{app=\"a\"}");
        assert!((sum - 100.7045).abs() < 1e-9, "{sum}");
        assert_eq!(
            value(&text, "t_duration_seconds_bucket{app=\"b\",le=\"0.025\"}"),
            1.0
        );
        assert_eq!(
            value(&text, "t_duration_seconds_bucket{app=\"b\",le=\"0.01\"}"),
            0.0
        );
        // Counters are still the exporter's.
        assert_eq!(value(&text, "t_things_total"), 3.0);
    }

    #[test]
    fn label_values_are_escaped_and_nan_is_not_counted() {
        let (recorder, handle) = Recorder::new();
        metrics::with_local_recorder(&recorder, || {
            let h = metrics::histogram!("t_seconds", "app" => "a\"b\\c\nd");
            h.record(f64::NAN);
            h.record(-1.0);
        });
        let text = handle.render();
        assert_eq!(
            value(&text, "t_seconds_count{app=\"a\\\"b\\\\c\\nd\"}"),
            1.0,
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "t_seconds_bucket{app=\"a\\\"b\\\\c\\nd\",le=\"0.001\"}"
            ),
            1.0
        );
    }

    #[test]
    fn the_same_key_is_one_histogram_and_counts_from_many_threads_are_exact() {
        let (recorder, handle) = Recorder::new();
        let h = metrics::with_local_recorder(&recorder, || metrics::histogram!("t_seconds"));
        let again = metrics::with_local_recorder(&recorder, || metrics::histogram!("t_seconds"));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        h.record(0.002);
                        again.record(0.002);
                    }
                });
            }
        });
        let text = handle.render();
        assert_eq!(value(&text, "t_seconds_count "), 80_000.0);
        let sum = value(&text, "t_seconds_sum ");
        assert!((sum - 160.0).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn nothing_recorded_renders_nothing_of_its_own() {
        let (_recorder, handle) = Recorder::new();
        assert!(!handle.render().contains("histogram"));
    }
}
