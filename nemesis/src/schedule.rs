//! The plan of faults, drawn from the seed before the run starts, so a seed names one schedule: what starts
//! when, against what, and for how long. Faults overlap freely, except where a double fault would be a
//! different promise (see [`Fault::resource`]).

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::deployment::{INSTANCES, SERVICES};

/// Where the network faults are injected: the proxy in front of the database or of every broker node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    Database,
    Broker,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// kill -9 of one instance, restarted after the fault's duration.
    KillService { service: &'static str, instance: usize },
    /// SIGSTOP of one instance, SIGCONT after the fault's duration.
    StallService { service: &'static str, instance: usize },
    /// kill -9 of one broker node's VM, started again after the duration.
    KillBrokerNode { node: usize },
    /// `rabbitmqctl stop` of one node, started again after the duration.
    StopBrokerNode { node: usize },
    /// Every packet between one node and the other two dropped, healed after the duration.
    PartitionBrokerNode { node: usize },
    /// The primary killed, the standby promoted and the stable address moved at once; a new synchronous
    /// standby is built from the new primary afterwards, so the fault can happen again.
    FailOverDatabase,
    /// The synchronous standby stopped for the duration: every commit on the primary waits for it.
    LoseStandby,
    /// Every chunk of bytes through the link delayed by `delay_ms` each way for the duration.
    SlowLink { link: Link, delay_ms: u64 },
    /// Every connection through the link cut, `times` times over the duration (a lossy link's resets).
    CutLink { link: Link, times: u32 },
    /// A stock row of a hot product locked (`SELECT … FOR UPDATE` in an open transaction) for the duration.
    HoldHotRow { product: &'static str },
    /// All but a few of the primary's connection slots taken by idle sessions for the duration.
    FillConnections,
    /// One instance's wall clock moved by `offset_ms` for the duration, then back.
    JumpClock { service: &'static str, instance: usize, offset_ms: i64 },
}

impl Fault {
    /// The kind, as the report groups faults.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::KillService { .. } => "kill -9 of a service instance",
            Self::StallService { .. } => "SIGSTOP of a service instance",
            Self::KillBrokerNode { .. } => "kill -9 of a RabbitMQ node",
            Self::StopBrokerNode { .. } => "stop of a RabbitMQ node",
            Self::PartitionBrokerNode { .. } => "RabbitMQ node partitioned",
            Self::FailOverDatabase => "PostgreSQL primary killed, standby promoted",
            Self::LoseStandby => "synchronous standby lost",
            Self::SlowLink { .. } => "slow link",
            Self::CutLink { .. } => "connections cut",
            Self::HoldHotRow { .. } => "hot row locked",
            Self::FillConnections => "connection slots taken",
            Self::JumpClock { .. } => "clock jump",
        }
    }

    /// What two faults must not hold at once. One instance of a service is disturbed at a time (its twin
    /// carries on), one broker node (a majority stays), one replication fault (losing the standby and then
    /// the primary loses commits by PostgreSQL's own contract, not the mesh's), one fault per link and per
    /// kind of database load, one clock per instance.
    pub fn resource(&self) -> String {
        match self {
            Self::KillService { service, .. } | Self::StallService { service, .. } => format!("process:{service}"),
            Self::KillBrokerNode { .. } | Self::StopBrokerNode { .. } | Self::PartitionBrokerNode { .. } => {
                "broker".into()
            }
            Self::FailOverDatabase | Self::LoseStandby => "replication".into(),
            Self::SlowLink { link, .. } | Self::CutLink { link, .. } => format!("link:{link:?}"),
            Self::HoldHotRow { .. } => "hot-row".into(),
            Self::FillConnections => "connections".into(),
            Self::JumpClock { service, instance, .. } => format!("clock:{service}#{instance}"),
        }
    }

    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Self::KillService { service, instance } => format!("kill -9 {service}#{instance}"),
            Self::StallService { service, instance } => format!("SIGSTOP {service}#{instance}"),
            Self::KillBrokerNode { node } => format!("kill -9 rabbit n{}", node + 1),
            Self::StopBrokerNode { node } => format!("rabbitmqctl stop n{}", node + 1),
            Self::PartitionBrokerNode { node } => format!("partition rabbit n{} from the others", node + 1),
            Self::FailOverDatabase => "kill -9 the PostgreSQL primary, promote the standby".into(),
            Self::LoseStandby => "stop the synchronous standby".into(),
            Self::SlowLink { link, delay_ms } => format!("{link:?} link +{delay_ms} ms each way"),
            Self::CutLink { link, times } => format!("{link:?} link: every connection cut {times} times"),
            Self::HoldHotRow { product } => format!("lock the stock row of {product}"),
            Self::FillConnections => "take all but 4 of the primary's connection slots".into(),
            Self::JumpClock { service, instance, offset_ms } => {
                format!("{service}#{instance} wall clock {offset_ms:+} ms")
            }
        }
    }
}

/// One fault of the plan: when it starts (from the start of the faults) and how long it lasts.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

/// Draws the plan for `length` of faults from `seed`: a new fault every 1–6 s, each drawn by weight.
pub fn plan(seed: u64, length: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plan = Vec::new();
    let mut at = Duration::from_secs(2);
    while at < length {
        let (fault, lasts) = draw(&mut rng);
        // Every fault is over by the end: the checks begin from there.
        let lasts = lasts.min(length.saturating_sub(at));
        plan.push(Planned { at, lasts, fault });
        at += Duration::from_millis(rng.random_range(1_000..6_000));
    }
    plan
}

fn secs(rng: &mut StdRng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.random_range(from * 1000..=to * 1000))
}

fn draw(rng: &mut StdRng) -> (Fault, Duration) {
    let service = SERVICES[rng.random_range(0..SERVICES.len())];
    let instance = rng.random_range(1..=INSTANCES);
    let node = rng.random_range(0..3);
    let link = if rng.random_bool(0.5) { Link::Database } else { Link::Broker };
    match rng.random_range(0..100) {
        0..20 => (Fault::KillService { service, instance }, secs(rng, 1, 10)),
        20..32 => (Fault::StallService { service, instance }, secs(rng, 1, 20)),
        32..37 => (Fault::KillBrokerNode { node }, secs(rng, 3, 15)),
        37..41 => (Fault::StopBrokerNode { node }, secs(rng, 3, 15)),
        41..47 => (Fault::PartitionBrokerNode { node }, secs(rng, 5, 25)),
        47..52 => (Fault::FailOverDatabase, Duration::ZERO),
        52..57 => (Fault::LoseStandby, secs(rng, 2, 40)),
        57..67 => (Fault::SlowLink { link, delay_ms: rng.random_range(20..=300) }, secs(rng, 3, 15)),
        67..74 => (Fault::CutLink { link, times: rng.random_range(1..=3) }, secs(rng, 1, 8)),
        74..80 => (Fault::HoldHotRow { product: ["p0", "p1", "scarce"][rng.random_range(0..3)] }, secs(rng, 1, 8)),
        80..85 => (Fault::FillConnections, secs(rng, 2, 10)),
        _ => {
            let offset_ms = rng.random_range(1_000..=4_000) * if rng.random_bool(0.5) { 1 } else { -1 };
            (Fault::JumpClock { service, instance, offset_ms }, secs(rng, 3, 20))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_plan_and_every_fault_ends_in_time() {
        let length = Duration::from_secs(120);
        let one = plan(7, length);
        let again = plan(7, length);
        assert_eq!(format!("{one:?}"), format!("{again:?}"));
        assert_ne!(format!("{one:?}"), format!("{:?}", plan(8, length)));
        assert!(one.len() >= 20, "a fault every 1-6 s over two minutes: {}", one.len());
        assert!(one.iter().all(|p| p.at + p.lasts <= length));
    }

    #[test]
    fn long_plans_draw_every_kind() {
        let kinds: std::collections::BTreeSet<&str> =
            plan(1, Duration::from_secs(1800)).iter().map(|p| p.fault.kind()).collect();
        assert_eq!(kinds.len(), 12, "{kinds:?}");
    }
}
