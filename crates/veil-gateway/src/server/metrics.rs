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
    pub attributes_dropped: Counter,
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
        let attributes_dropped = Counter::default();
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
            "attributes_dropped",
            "Undeclared attributes of accepted events dropped by ignore_attributes (never stored)",
            attributes_dropped.clone(),
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
            attributes_dropped,
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

    /// The exposition in the format the scraper's `Accept` header prefers.
    pub fn render_for(&self, accept: Option<&str>) -> (&'static str, String) {
        match Format::negotiate(accept) {
            Format::OpenMetrics => (OPENMETRICS, self.render()),
            Format::Text004 => (TEXT_004, to_text_004(&self.render())),
        }
    }

    /// Counts one rejection.
    pub fn reject(&self, reason: &str, n: u64) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc_by(n);
    }
}

/// `Content-Type` of the OpenMetrics 1.0 exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format 0.0.4.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two expositions a scraper may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    /// Picks by the `Accept` header's quality values: the Prometheus text format when the
    /// scraper prefers `text/plain` to OpenMetrics, OpenMetrics otherwise (also when
    /// nothing is said).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::OpenMetrics;
        };
        let (mut om, mut text) = (None::<f32>, None::<f32>);
        for item in accept.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then_some(v)
                })
                .find_map(|v| v.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .map_or(1.0, |q| q.clamp(0.0, 1.0));
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut om,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |s| s.max(q)));
        }
        match (om, text) {
            (None, Some(t)) if t > 0.0 => Format::Text004,
            (Some(o), Some(t)) if t > o => Format::Text004,
            // OpenMetrics refused outright: the text format is the other one there is.
            (Some(0.0), _) => Format::Text004,
            _ => Format::OpenMetrics,
        }
    }
}

/// Rewrites an OpenMetrics exposition as Prometheus text 0.0.4: a counter family is named
/// by its `_total` sample, there is no `# UNIT` and no `# EOF`.
pub fn to_text_004(om: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                } else {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_quality_values() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1")),
            Format::Text004
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2,text/plain;q=0.9")),
            Format::Text004
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("text/plain;q=0")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn text_004_names_counters_by_their_total() {
        let m = Metrics::default();
        m.accepted.inc_by(3);
        m.reject("field_not_allowed", 2);
        let text = to_text_004(&m.render());
        assert!(
            text.contains("# TYPE veil_events_accepted_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP veil_events_accepted_total Events accepted"),
            "{text}"
        );
        assert!(text.contains("veil_events_accepted_total 3\n"), "{text}");
        assert!(!text.contains("# EOF"));
        // Every family has its HELP line.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        // Only the types both formats share: a new kind of metric (info, stateset,
        // exemplars) needs the converter taught first.
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let kind = l.rsplit(' ').next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{l}");
        }
        assert!(!text.contains(" # {"), "no exemplars in 0.0.4");
        assert!(types >= 5, "{text}");
    }
}
