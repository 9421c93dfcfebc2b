//! What a run measured: counts, latency histograms (HdrHistogram, microseconds), final statuses, errors
//! by kind and the stock check; rendered as a table for people, JSON for machines, and an SVG picture.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::{
    options::{Mode, Options, Scenario},
    shopper::Outcome,
};

/// The stock check after a run.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StockCheck {
    /// Units gone from on hand over the run's products.
    pub sold: i64,
    /// Units in the CONFIRMED orders the run saw.
    pub confirmed_units: i64,
    /// Units still held after every order ended (must be 0).
    pub still_reserved: i64,
    /// Units sold beyond what was on hand (must be 0).
    pub oversold: i64,
    /// All of the above agree.
    pub balanced: bool,
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    scenario: Scenario,
    mode: Mode,
    /// Shoppers started.
    pub offered: u64,
    /// Checkouts answered 202.
    pub accepted: u64,
    /// Orders whose final status was seen.
    pub completed: u64,
    /// Accepted orders whose final status was not seen in time.
    pub unknown_final: u64,
    /// Final statuses (and `SOLD_OUT_AT_ADD`).
    pub by_status: BTreeMap<String, u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Units in CONFIRMED orders.
    pub confirmed_units: i64,
    add: Histogram<u64>,
    checkout: Histogram<u64>,
    to_final: Histogram<u64>,
    shed: Histogram<u64>,
    /// How long the run took.
    pub elapsed: Duration,
    /// The stock check, once done.
    pub stock: Option<StockCheck>,
    /// The floor, when measured in the same run.
    pub floor: Option<crate::floor::Floor>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, 600_000_000)
}

impl Report {
    /// An empty report for `options`.
    pub fn new(options: &Options) -> Self {
        Self {
            scenario: options.scenario,
            mode: options.mode,
            offered: 0,
            accepted: 0,
            completed: 0,
            unknown_final: 0,
            by_status: BTreeMap::new(),
            errors: BTreeMap::new(),
            confirmed_units: 0,
            add: histogram(),
            checkout: histogram(),
            to_final: histogram(),
            shed: histogram(),
            elapsed: Duration::ZERO,
            stock: None,
            floor: None,
        }
    }

    /// Counts a failure of the generator itself.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Adds one shopper's outcome.
    pub(crate) fn record(&mut self, outcome: Outcome) {
        for d in &outcome.adds {
            let _ = self.add.record(micros(*d));
        }
        if let Some(d) = outcome.checkout {
            self.accepted += 1;
            let _ = self.checkout.record(micros(d));
        }
        if let Some(d) = outcome.to_final {
            self.completed += 1;
            let _ = self.to_final.record(micros(d));
        }
        if let Some(status) = &outcome.status {
            *self.by_status.entry(status.clone()).or_default() += 1;
            if status == "CONFIRMED" {
                self.confirmed_units += outcome.units;
            }
        }
        if let Some(d) = outcome.shed {
            let _ = self.shed.record(micros(d));
        }
        if let Some(kind) = outcome.error {
            if outcome.checkout.is_some() && outcome.to_final.is_none() {
                self.unknown_final += 1;
            }
            self.error(&kind);
        }
    }

    /// The live line.
    pub fn progress(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(0.001);
        let errors: u64 = self.errors.values().sum();
        let in_flight = self
            .offered
            .saturating_sub(self.completed + errors + self.by_status.get("SOLD_OUT_AT_ADD").copied().unwrap_or(0));
        format!(
            "t={:>5.1}s offered {:>7} ({:>6.0}/s) accepted {:>7} ({:>6.0}/s) completed {:>7} ({:>6.0}/s) errors {:>5} in flight {:>6}",
            secs,
            self.offered,
            self.offered as f64 / secs,
            self.accepted,
            self.accepted as f64 / secs,
            self.completed,
            self.completed as f64 / secs,
            errors,
            in_flight
        )
    }

    fn describe(&self) -> String {
        let scenario = match self.scenario {
            Scenario::Spread => "spread",
            Scenario::Hot => "hot",
            Scenario::Mixed => "mixed",
        };
        match self.mode {
            Mode::Open { rate } => format!("{scenario}, open loop at {rate}/s"),
            Mode::Closed { concurrency } => format!("{scenario}, closed loop with {concurrency} shoppers"),
        }
    }

    fn percentiles(h: &Histogram<u64>) -> Value {
        let ms = |q: f64| (h.value_at_quantile(q) as f64 / 1000.0 * 10.0).round() / 10.0;
        json!({
            "count": h.len(),
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
            "max_ms": (h.max() as f64 / 1000.0 * 10.0).round() / 10.0,
        })
    }

    /// The report for machines.
    pub fn to_json(&self) -> Value {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        json!({
            "run": self.describe(),
            "elapsed_s": (secs * 100.0).round() / 100.0,
            "offered": self.offered, "accepted": self.accepted, "completed": self.completed,
            "offered_per_s": self.offered as f64 / secs,
            "accepted_per_s": self.accepted as f64 / secs,
            "completed_per_s": self.completed as f64 / secs,
            "latency": {
                "add_to_cart": Self::percentiles(&self.add),
                "check_out_cart": Self::percentiles(&self.checkout),
                "checkout_to_final": Self::percentiles(&self.to_final),
                "shed_503": Self::percentiles(&self.shed),
            },
            "final_status": self.by_status,
            "errors": self.errors,
            "unknown_final": self.unknown_final,
            "stock": self.stock,
            "floor": self.floor,
        })
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let j = self.to_json();
        let mut out = String::new();
        let _ = writeln!(out, "ordermesh-bench: {} for {:.1} s", self.describe(), j["elapsed_s"]);
        let _ = writeln!(out, "{:<22}{:>12}{:>12}", "checkouts", "count", "per second");
        for (name, count, rate) in [
            ("offered", self.offered, &j["offered_per_s"]),
            ("accepted (202)", self.accepted, &j["accepted_per_s"]),
            ("completed (final)", self.completed, &j["completed_per_s"]),
        ] {
            let _ = writeln!(out, "{name:<22}{count:>12}{:>12.1}", rate.as_f64().unwrap_or(0.0));
        }
        let _ = writeln!(
            out,
            "\n{:<22}{:>8}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, key) in [
            ("addToCart", "add_to_cart"),
            ("checkOutCart", "check_out_cart"),
            ("checkout -> final", "checkout_to_final"),
            ("refused 503 (shed)", "shed_503"),
        ] {
            let l = &j["latency"][key];
            let n = |k: &str| l[k].as_f64().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "{name:<22}{:>8}{:>9.1}{:>9.1}{:>9.1}{:>9.1}{:>9.1}",
                l["count"].as_u64().unwrap_or(0),
                n("p50_ms"),
                n("p90_ms"),
                n("p99_ms"),
                n("p999_ms"),
                n("max_ms")
            );
        }
        let _ = writeln!(
            out,
            "\nfinal status: {}",
            if self.by_status.is_empty() { "none".into() } else { join(&self.by_status) }
        );
        let _ = writeln!(out, "errors: {}", if self.errors.is_empty() { "none".into() } else { join(&self.errors) });
        match &self.stock {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "stock: {} units sold, {} in CONFIRMED orders, {} still reserved, {} oversold -> {}",
                    s.sold,
                    s.confirmed_units,
                    s.still_reserved,
                    s.oversold,
                    if s.balanced { "balanced" } else { "NOT BALANCED" }
                );
            }
            None => {
                let _ = writeln!(out, "stock: not checked");
            }
        }
        if let Some(floor) = &self.floor {
            let completed = self.completed as f64 / self.elapsed.as_secs_f64().max(0.001);
            let share = |floor_rate: f64| if floor_rate > 0.0 { completed / floor_rate * 100.0 } else { 0.0 };
            out.push_str(&floor.render());
            let _ = writeln!(
                out,
                "mesh: {completed:.1} completed checkouts/s = {:.2} % of the RabbitMQ round trips, {:.2} % of the hot-row and {:.2} % of the spread reservations PostgreSQL alone does here",
                share(floor.rabbitmq_round_trips_per_s),
                share(floor.postgres_hot_updates_per_s),
                share(floor.postgres_spread_updates_per_s)
            );
            let _ = writeln!(
                out,
                "mesh: {:.1} % of the simulated checkouts (a checkout's broker and database work, with no other code)",
                share(floor.checkouts_per_s)
            );
            let _ = writeln!(
                out,
                "ceiling here for this work, one order per message and per statement: {:.0} checkouts/s (the lowest of the whole and its parts)",
                floor.ceiling()
            );
        }
        out
    }

    /// The three latency distributions as an SVG bar chart (log-spaced buckets), for people.
    pub fn svg(&self) -> String {
        let series = [
            ("addToCart", &self.add, "#4e79a7"),
            ("checkOutCart", &self.checkout, "#f28e2b"),
            ("checkout → final", &self.to_final, "#59a14f"),
        ];
        // Buckets from 0.1 ms to 100 s, four per decade.
        let edges: Vec<u64> = (0..=24).map(|i| (100.0 * 10f64.powf(f64::from(i) / 4.0)) as u64).collect();
        let (width, height, left, bottom, top) = (900.0, 420.0, 60.0, 60.0, 40.0);
        let plot_w = width - left - 20.0;
        let plot_h = height - bottom - top;
        let slot = plot_w / (edges.len() - 1) as f64;
        let bar = slot / (series.len() as f64 + 1.0);
        let shares: Vec<Vec<f64>> = series
            .iter()
            .map(|(_, h, _)| {
                let total = h.len().max(1) as f64;
                edges.windows(2).map(|w| h.count_between(w[0], w[1] - 1) as f64 / total).collect()
            })
            .collect();
        let max_share = shares.iter().flatten().copied().fold(0.01, f64::max);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">ordermesh-bench latency: {}</text>\n",
            self.describe()
        );
        for (s, (name, _, color)) in series.iter().enumerate() {
            for (b, share) in shares[s].iter().enumerate() {
                let h = share / max_share * plot_h;
                let x = left + b as f64 * slot + (s as f64 + 0.5) * bar;
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{color}\"/>",
                    top + plot_h - h
                );
            }
            let _ = writeln!(
                svg,
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
                width - 200.0,
                top + 20.0 * s as f64,
                width - 182.0,
                top + 10.0 + 20.0 * s as f64
            );
        }
        for (i, edge) in edges.iter().enumerate().step_by(4) {
            let x = left + i as f64 * slot;
            let label = if *edge >= 1_000_000 {
                format!("{} s", edge / 1_000_000)
            } else {
                format!("{} ms", *edge as f64 / 1000.0)
            };
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
                top + plot_h,
                top + plot_h + 5.0,
                top + plot_h + 20.0
            );
        }
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
            top + plot_h,
            left + plot_w,
            top + plot_h
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">latency (log scale); bar height: share of requests in the bucket</text>",
            left + plot_w / 2.0,
            height - 15.0
        );
        svg.push_str("</svg>\n");
        svg
    }
}

fn join(map: &BTreeMap<String, u64>) -> String {
    map.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
}
