//! Prometheus metrics of Veil itself (`GET /metrics`, open to scrapers). Labels are reason
//! codes, endpoint templates and collection names — never a principal's name (anyone who
//! can reach the port reads this) and never anything an event carried.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(&'static str, String)>;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub accepted: Counter,
    pub duplicates: Counter,
    pub rejected: Family<Labels, Counter>,
    pub requests: Family<Labels, Counter>,
    pub latency: Family<Labels, Histogram>,
    pub queue_events: Gauge,
    pub budget_spent: Family<Labels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("veil");
        let accepted = Counter::default();
        let duplicates = Counter::default();
        let rejected = Family::<Labels, Counter>::default();
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let queue_events = Gauge::default();
        let budget_spent = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "events_accepted",
            "Events accepted and committed",
            accepted.clone(),
        );
        registry.register(
            "events_duplicate",
            "Events already ingested before (same source and id), not counted again",
            duplicates.clone(),
        );
        registry.register(
            "events_rejected",
            "Events rejected, by reason code",
            rejected.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            latency.clone(),
        );
        registry.register(
            "ingest_queue_events",
            "Events admitted and waiting for their commit",
            queue_events.clone(),
        );
        registry.register(
            "budget_spent_epsilon",
            "Privacy budget spent in the current period, by collection (all principals)",
            budget_spent.clone(),
        );
        Metrics {
            registry,
            accepted,
            duplicates,
            rejected,
            requests,
            latency,
            queue_events,
            budget_spent,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Counts one rejection.
    pub fn reject(&self, reason: &str, n: u64) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc_by(n);
    }
}
