//! The run's report: the faults injected by kind, the operations and how they ended, the violations, and what
//! the shoppers saw (failed tries by cause, latency by the kind of fault in force, the longest wait for a
//! checkout). Markdown, so the README and docs/nemesis.md can carry it as it is.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use crate::{
    checker::{State, Violation},
    faults::FaultRecord,
    history::{Answer, Op, Request},
};

/// What a run was, besides its history.
#[derive(Debug)]
pub struct Run {
    pub seed: u64,
    pub minutes: f64,
    pub shoppers: usize,
    /// Milliseconds from the start of the run when the faults began and when the last was healed.
    pub faults_from_ms: u64,
    pub faults_to_ms: u64,
    /// How long after the last fault every order was final, if it was within the bound.
    pub settled_after: Option<Duration>,
    pub settle_bound: Duration,
}

/// How the operations of one kind ended.
#[derive(Default)]
struct Tally {
    sent: usize,
    done: usize,
    refused: BTreeMap<u16, usize>,
    gave_up: usize,
    tries: usize,
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::SetEmail { .. } => "set email",
        Request::Add { .. } => "add",
        Request::Remove { .. } => "remove",
        Request::Checkout => "checkout",
        Request::ReadOrder { .. } => "read order",
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The kinds of fault in force at `at_ms` ("none" when none was).
fn in_force(faults: &[FaultRecord], at_ms: u64) -> Vec<&'static str> {
    let mut kinds: Vec<&'static str> = faults
        .iter()
        .filter(|f| f.outcome == "ok" && f.started_ms <= at_ms && at_ms <= f.ended_ms)
        .map(|f| f.kind)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.is_empty() {
        kinds.push("none");
    }
    kinds
}

/// The longest time, while the faults ran, between two accepted checkouts (or from the start of the faults
/// to the first, or from the last to their end).
fn longest_without_checkout(ops: &[Op], run: &Run) -> (u64, u64) {
    let mut accepted: Vec<u64> = ops
        .iter()
        .filter(|o| o.request == Request::Checkout && o.done().is_some())
        .map(|o| o.ended_ms)
        .filter(|t| (run.faults_from_ms..=run.faults_to_ms).contains(t))
        .collect();
    accepted.sort_unstable();
    let mut marks = vec![run.faults_from_ms];
    marks.extend(accepted);
    marks.push(run.faults_to_ms);
    marks.windows(2).map(|w| (w[1] - w[0], w[0])).max().unwrap_or_default()
}

pub fn render(run: &Run, ops: &[Op], faults: &[FaultRecord], state: &State, violations: &[Violation]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Seed {}, {:.1} min of faults, {} shoppers, two instances of every service, three RabbitMQ nodes, a PostgreSQL primary with a synchronous standby.\n",
        run.seed, run.minutes, run.shoppers
    );

    let _ = writeln!(
        out,
        "| fault | injected | skipped (resource busy, standby not in sync) | failed to inject |\n|---|---|---|---|"
    );
    let mut by_kind: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for f in faults {
        let e = by_kind.entry(f.kind).or_default();
        match f.outcome.as_str() {
            "ok" => e.0 += 1,
            o if o.starts_with("skipped") => e.1 += 1,
            _ => e.2 += 1,
        }
    }
    for (kind, (ok, skipped, failed)) in &by_kind {
        let _ = writeln!(out, "| {kind} | {ok} | {skipped} | {failed} |");
    }
    let total: usize = by_kind.values().map(|v| v.0).sum();
    let _ = writeln!(out, "| **all** | **{total}** | | |\n");

    let _ = writeln!(
        out,
        "| operation | sent | applied (2xx) | refused (4xx) | gave up | tries |\n|---|---|---|---|---|---|"
    );
    let mut by_op: BTreeMap<&str, Tally> = BTreeMap::new();
    for op in ops {
        let e = by_op.entry(request_kind(&op.request)).or_default();
        e.sent += 1;
        e.tries += op.attempts.len();
        match &op.answer {
            Answer::Done { .. } => e.done += 1,
            Answer::Refused { status, .. } => *e.refused.entry(*status).or_default() += 1,
            Answer::GaveUp => e.gave_up += 1,
        }
    }
    for (kind, Tally { sent, done, refused, gave_up, tries }) in &by_op {
        let refused: Vec<String> = refused.iter().map(|(s, n)| format!("{n}× {s}")).collect();
        let refused = if refused.is_empty() { "0".to_owned() } else { refused.join(", ") };
        let _ = writeln!(out, "| {kind} | {sent} | {done} | {refused} | {gave_up} | {tries} |");
    }

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for order in state.orders.values() {
        *statuses.entry(order.status.as_str()).or_default() += 1;
    }
    let statuses: Vec<String> = statuses.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let _ = writeln!(out, "\nOrders: {} ({}).", state.orders.len(), statuses.join(", "));
    let events: std::collections::HashSet<&str> = state.mails.iter().map(|m| m.1.as_str()).collect();
    let _ = writeln!(
        out,
        "Emails accepted by the SMTP server: {} for {} order events ({} second copies).",
        state.mails.len(),
        events.len(),
        state.mails.len() - events.len()
    );
    let mut failed_tries: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in ops.iter().flat_map(|o| &o.attempts) {
        match (attempt.status, &attempt.error) {
            (Some(s), _) if s >= 500 || s == 429 => *failed_tries.entry(s.to_string()).or_default() += 1,
            (None, Some(e)) => *failed_tries.entry(e.clone()).or_default() += 1,
            _ => {}
        }
    }
    let failed: Vec<String> = failed_tries.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    let _ = writeln!(
        out,
        "Tries answered with no judgement (retried with the same key): {}.",
        if failed.is_empty() { "none".to_owned() } else { failed.join(", ") }
    );
    let (gap, from) = longest_without_checkout(ops, run);
    #[allow(clippy::cast_precision_loss)]
    let _ = writeln!(
        out,
        "Longest time with no checkout accepted while the faults ran: {:.1} s (from {:.1} s into the run; in force then: {}).",
        gap as f64 / 1000.0,
        from as f64 / 1000.0,
        in_force(faults, from + gap / 2).join(", ")
    );
    match run.settled_after {
        Some(t) => {
            let _ = writeln!(
                out,
                "Every order final {:.1} s after the last fault was healed (bound {:?}).",
                t.as_secs_f64(),
                run.settle_bound
            );
        }
        None => {
            let _ = writeln!(out, "Orders still not final {:?} after the last fault was healed.", run.settle_bound);
        }
    }

    let _ = writeln!(
        out,
        "\nLatency of adds, removals and checkouts, first try to answer, by the fault in force when each was sent (a request counts under each):\n\n| in force | requests | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    let mut latencies: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for op in
        ops.iter().filter(|o| matches!(o.request, Request::Add { .. } | Request::Remove { .. } | Request::Checkout))
    {
        for kind in in_force(faults, op.started_ms) {
            latencies.entry(kind).or_default().push(op.ended_ms - op.started_ms);
        }
    }
    for (kind, mut values) in latencies {
        values.sort_unstable();
        let _ = writeln!(
            out,
            "| {kind} | {} | {} ms | {} ms | {} ms |",
            values.len(),
            percentile(&values, 0.5),
            percentile(&values, 0.99),
            values.last().copied().unwrap_or_default()
        );
    }

    let _ = writeln!(out, "\n**Violations: {}.**", violations.len());
    let mut by_check: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for v in violations {
        by_check.entry(v.check).or_default().push(&v.detail);
    }
    for (check, details) in by_check {
        let _ = writeln!(out, "- {check} ({}):", details.len());
        for detail in details.iter().take(20) {
            let _ = writeln!(out, "  - {detail}");
        }
    }
    let dead: Vec<&str> = state.audit.1.lines().filter(|l| l.contains("dead letter in")).map(str::trim).collect();
    if !dead.is_empty() {
        let _ = writeln!(out, "\nDead letters (each with its reason): {}", dead.join("; "));
    }
    out
}
