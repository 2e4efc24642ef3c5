//! A process-wide `metrics` recorder that keeps counters, so tests can read
//! what logplex recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
pub struct Counters {
    map: Mutex<HashMap<Key, Arc<AtomicU64>>>,
}

impl Counters {
    /// The value of counter `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let map = self.map.lock().unwrap();
        map.iter()
            .filter(|(k, _)| k.name() == name)
            .filter(|(k, _)| {
                labels
                    .iter()
                    .all(|(n, v)| k.labels().any(|l| l.key() == *n && l.value() == *v))
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

struct Shared(&'static Counters);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut map = self.0.map.lock().unwrap();
        Counter::from_arc(map.entry(key.clone()).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Installs the recorder (once per test binary) and returns its counters.
pub fn counters() -> &'static Counters {
    static COUNTERS: OnceLock<&'static Counters> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        let counters: &'static Counters = Box::leak(Box::default());
        metrics::set_global_recorder(Shared(counters)).expect("no other recorder");
        counters
    })
}
