//! The sidecar's `/metrics` as the bench reads it: the names it looks for, one scrape of the
//! Prometheus text, and where a message's time went in a sidecar run.

use serde_json::json;

/// Settled messages, whatever the outcome; the sidecar's own count of acked work.
pub const SETTLED: &str = "outrigger_messages_settled_total";
/// Claim and completion calls to the dedup store; each may carry many messages.
const STORE_CALLS: &str = "outrigger_dedup_store_calls_total";
/// The POST to the app: request start to the end of the response body.
const DELIVERY_DURATION: &str = "outrigger_delivery_duration_seconds";
/// The other stages of a message's life, by the `stage` label.
const STAGE_DURATION: &str = "outrigger_stage_duration_seconds";
/// The label of [`STAGE_DURATION`] that names the stage.
const STAGE: &str = "stage";

/// One scrape of `/metrics`, in the Prometheus text format.
pub struct Scrape {
    text: String,
}

impl Scrape {
    /// The body `/metrics` answered with.
    pub fn new(text: String) -> Self {
        Self { text }
    }

    /// `name` summed over the label sets that carry every one of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.text
            .lines()
            .filter_map(sample)
            .filter(|s| s.name == name && labels.iter().all(|&(k, v)| s.has_label(k, v)))
            .map(|s| s.value)
            .sum()
    }

    /// The mean observation of histogram `name` over the label sets that carry every one of
    /// `labels` (its `_sum` over its `_count`); `None` when nothing was observed.
    pub fn mean(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let count = self.sum(&format!("{name}_count"), labels);
        (count > 0.0).then(|| self.sum(&format!("{name}_sum"), labels) / count)
    }
}

/// One sample line: `name{key="value",...} value`.
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

impl Sample<'_> {
    /// Whether the sample carries `key="value"`. The bench's label values (topic, queue and
    /// stage names) hold no commas or quotes, so splitting at commas is enough.
    fn has_label(&self, key: &str, value: &str) -> bool {
        let wanted = format!("{key}=\"{value}\"");
        self.labels.split(',').any(|pair| pair == wanted)
    }
}

/// The sample on `line`; `None` for comments and anything else.
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?),
        None => (series, ""),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Where a message's time went in one sidecar throughput run: the mean of each stage in
/// milliseconds (`None` when the stage saw no message), and the dedup store's round trips.
#[derive(Clone, Copy, Debug, Default)]
pub struct Breakdown {
    /// Waiting for its ordering lane (the message before it of its key or partition).
    pub lane_ms: Option<f64>,
    /// Claiming its dedup key.
    pub claim_ms: Option<f64>,
    /// The POST to the app.
    pub post_ms: Option<f64>,
    /// Recording its completion in the dedup store.
    pub complete_ms: Option<f64>,
    /// Settling it at the broker (ack, or the offset's commit bookkeeping).
    pub settle_ms: Option<f64>,
    /// Dedup store calls (claims and completions) over messages settled.
    pub store_calls_per_message: Option<f64>,
}

impl Breakdown {
    /// The breakdown of everything the sidecar has counted since it started.
    pub fn from_scrape(scrape: &Scrape) -> Self {
        let stage_ms = |stage: &str| {
            scrape
                .mean(STAGE_DURATION, &[(STAGE, stage)])
                .map(|s| s * 1e3)
        };
        let settled = scrape.sum(SETTLED, &[]);
        Self {
            lane_ms: stage_ms("lane"),
            claim_ms: stage_ms("claim"),
            post_ms: scrape.mean(DELIVERY_DURATION, &[]).map(|s| s * 1e3),
            complete_ms: stage_ms("complete"),
            settle_ms: stage_ms("settle"),
            store_calls_per_message: (settled > 0.0)
                .then(|| scrape.sum(STORE_CALLS, &[]) / settled),
        }
    }

    /// The stages [`Breakdown::means_ms`] gives, in the order a message goes through them.
    pub const STAGES: [&'static str; 5] = ["lane wait", "claim", "POST", "complete", "settle"];

    /// The mean of each of [`Breakdown::STAGES`], milliseconds.
    pub fn means_ms(&self) -> [Option<f64>; 5] {
        [
            self.lane_ms,
            self.claim_ms,
            self.post_ms,
            self.complete_ms,
            self.settle_ms,
        ]
    }

    /// The same figures as JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "lane_wait_ms": self.lane_ms,
            "claim_ms": self.claim_ms,
            "post_ms": self.post_ms,
            "complete_ms": self.complete_ms,
            "settle_ms": self.settle_ms,
            "store_calls_per_message": self.store_calls_per_message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP outrigger_stage_duration_seconds Time in each stage.
# TYPE outrigger_stage_duration_seconds histogram
outrigger_stage_duration_seconds_bucket{source=\"t\",stage=\"claim\",le=\"0.001\"} 3
outrigger_stage_duration_seconds_sum{source=\"t\",stage=\"claim\"} 0.006
outrigger_stage_duration_seconds_count{source=\"t\",stage=\"claim\"} 4
outrigger_stage_duration_seconds_sum{source=\"t\",stage=\"settle\"} 0.002
outrigger_stage_duration_seconds_count{source=\"t\",stage=\"settle\"} 4
outrigger_stage_duration_seconds_sum{source=\"t\",stage=\"lane\"} 0
outrigger_stage_duration_seconds_count{source=\"t\",stage=\"lane\"} 0
outrigger_delivery_duration_seconds_sum{source=\"t\"} 0.01
outrigger_delivery_duration_seconds_count{source=\"t\"} 4
outrigger_messages_settled_total{outcome=\"delivered\",source=\"t\"} 3
outrigger_messages_settled_total{outcome=\"duplicate\",source=\"t\"} 1
outrigger_dedup_store_calls_total{source=\"t\"} 2
outrigger_in_flight_messages 0
";

    #[test]
    fn sums_match_the_name_exactly_and_every_label_asked_for() {
        let scrape = Scrape::new(TEXT.to_owned());
        assert_eq!(scrape.sum(SETTLED, &[]), 4.0);
        assert_eq!(scrape.sum(SETTLED, &[("outcome", "duplicate")]), 1.0);
        assert_eq!(scrape.sum(SETTLED, &[("outcome", "dup")]), 0.0);
        assert_eq!(scrape.sum("outrigger_in_flight", &[]), 0.0);
        assert_eq!(scrape.sum("outrigger_in_flight_messages", &[]), 0.0);
        assert_eq!(scrape.sum(STORE_CALLS, &[("source", "t")]), 2.0);
    }

    #[test]
    fn the_breakdown_holds_means_in_milliseconds_and_calls_per_message() {
        let breakdown = Breakdown::from_scrape(&Scrape::new(TEXT.to_owned()));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(breakdown.claim_ms, 1.5));
        assert!(close(breakdown.settle_ms, 0.5));
        assert!(close(breakdown.post_ms, 2.5));
        assert_eq!(breakdown.lane_ms, None, "no observation, no mean");
        assert_eq!(breakdown.complete_ms, None);
        assert!(close(breakdown.store_calls_per_message, 0.5));
    }
}
