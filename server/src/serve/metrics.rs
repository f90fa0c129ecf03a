//! The server's counters and their Prometheus text (`GET /metrics`): requests by endpoint and
//! status, request latency histograms by endpoint, prompt tokens (evaluated and reused from a
//! slot's cache), generated tokens, and the gauges the slot pool reports (queue length, busy
//! slots). Endpoint labels are the server's own routes (anything else is `other`), so a client
//! cannot grow the label set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// One endpoint's latency histogram.
#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Requests at or under each bucket's bound (not cumulative here; summed when written).
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

/// The counters. Shared by every handler; cheap to update.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    prompt_tokens: AtomicU64,
    prompt_tokens_evaluated: AtomicU64,
    prompt_tokens_cached: AtomicU64,
    generated_tokens: AtomicU64,
    generations_cancelled: AtomicU64,
    rejected_queue_full: AtomicU64,
    infill_cache_hits: AtomicU64,
}

/// The gauges read from the slot pool when `/metrics` is asked.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PoolGauges {
    /// Slots in all.
    pub(crate) slots: usize,
    /// Slots generating now.
    pub(crate) busy: usize,
    /// Requests waiting for a slot.
    pub(crate) queued: usize,
}

impl Metrics {
    /// Counts a finished request and its latency (until its response head, for streams).
    pub(crate) fn record_request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((endpoint, status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let histogram = latency.entry(endpoint).or_default();
            let seconds = elapsed.as_secs_f64();
            if let Some(bucket) = LATENCY_BUCKETS_SECONDS.iter().position(|&b| seconds <= b) {
                histogram.buckets[bucket] += 1;
            }
            histogram.count += 1;
            histogram.sum_seconds += seconds;
        }
    }

    /// Counts one generation's tokens.
    pub(crate) fn record_generation(
        &self,
        prompt: usize,
        evaluated: usize,
        cached: usize,
        generated: usize,
    ) {
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.prompt_tokens_evaluated
            .fetch_add(evaluated as u64, Ordering::Relaxed);
        self.prompt_tokens_cached
            .fetch_add(cached as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
    }

    /// Counts a generation its client abandoned.
    pub(crate) fn record_cancelled(&self) {
        self.generations_cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an `/infill` answered from the suggestion cache, with no model call.
    pub(crate) fn record_infill_cache_hit(&self) {
        self.infill_cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request turned away because the queue was full.
    pub(crate) fn record_queue_full(&self) {
        self.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub(crate) fn render(&self, pool: PoolGauges) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };

        let _ = writeln!(
            out,
            "# HELP lmrs_requests_total HTTP requests answered, by endpoint and status.\n# TYPE lmrs_requests_total counter"
        );
        if let Ok(requests) = self.requests.lock() {
            for ((endpoint, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "lmrs_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {count}"
                );
            }
        }

        let _ = writeln!(
            out,
            "# HELP lmrs_request_duration_seconds Time to the response head, by endpoint.\n# TYPE lmrs_request_duration_seconds histogram"
        );
        if let Ok(latency) = self.latency.lock() {
            for (endpoint, histogram) in latency.iter() {
                let mut cumulative = 0;
                for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(histogram.buckets) {
                    cumulative += count;
                    let _ = writeln!(
                        out,
                        "lmrs_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "lmrs_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}\nlmrs_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}\nlmrs_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                    histogram.count, histogram.sum_seconds, histogram.count
                );
            }
        }

        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "lmrs_prompt_tokens_total",
            "Prompt tokens of finished generations.",
            load(&self.prompt_tokens),
        );
        counter(
            &mut out,
            "lmrs_prompt_tokens_evaluated_total",
            "Prompt tokens evaluated (not found in a slot's cache).",
            load(&self.prompt_tokens_evaluated),
        );
        counter(
            &mut out,
            "lmrs_prompt_tokens_cached_total",
            "Prompt tokens reused from a slot's KV cache.",
            load(&self.prompt_tokens_cached),
        );
        counter(
            &mut out,
            "lmrs_generated_tokens_total",
            "Tokens generated.",
            load(&self.generated_tokens),
        );
        counter(
            &mut out,
            "lmrs_generations_cancelled_total",
            "Generations stopped because their client went away.",
            load(&self.generations_cancelled),
        );
        counter(
            &mut out,
            "lmrs_requests_rejected_queue_full_total",
            "Requests answered 503 because every slot was busy and the queue full.",
            load(&self.rejected_queue_full),
        );
        counter(
            &mut out,
            "lmrs_infill_cache_hits_total",
            "/infill requests answered from the suggestion cache (same context, or typed through).",
            load(&self.infill_cache_hits),
        );
        gauge(
            &mut out,
            "lmrs_slots",
            "Slots (sessions) in all.",
            pool.slots,
        );
        gauge(
            &mut out,
            "lmrs_slots_busy",
            "Slots generating now.",
            pool.busy,
        );
        gauge(
            &mut out,
            "lmrs_queue_length",
            "Requests waiting for a free slot.",
            pool.queued,
        );
        out
    }
}
