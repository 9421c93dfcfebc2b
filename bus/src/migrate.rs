//! Turning an existing deployment's queues into the kind the topology declares (classic into quorum), with
//! every waiting message moved across: `ordermesh queues migrate`.
//!
//! RabbitMQ cannot change a queue's type in place, and refuses to redeclare it with other arguments. So each
//! queue that differs is emptied into a holding queue of the new kind (`<queue>.migrating`), deleted, declared
//! anew with its bindings, and refilled from the holding queue. A message is acked in its old queue only after
//! the broker confirmed its copy, so none is lost; one whose copy was confirmed but whose ack was lost to a
//! crash of this command is copied again when the command is run again (the services absorb duplicates).
//! Run it with every ordermesh service stopped: nothing may consume from or publish into a queue while it
//! is moved.

use std::time::Duration;

use lapin::{
    Channel, Connection,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
};

use crate::topology::{Topology, is_mismatch};

/// Deadline of each broker operation of the migration.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the migration did to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The queue.
    pub queue: String,
    /// Messages moved from the old queue into the new one.
    pub messages: u64,
}

/// What the migration found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Queues that were of another kind (or had other arguments), with the messages moved.
    pub migrated: Vec<Migrated>,
    /// Queues that were already as declared, or did not exist yet (then they are created).
    pub unchanged: Vec<String>,
}

impl Report {
    /// One line per queue, for the command's output.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.migrated {
            out.push_str(&format!("migrated {}: {} message(s) moved\n", m.queue, m.messages));
        }
        for q in &self.unchanged {
            out.push_str(&format!("unchanged {q}\n"));
        }
        out
    }
}

/// The holding queue a queue's messages wait in while it is replaced.
pub fn holding_queue(queue: &str) -> String {
    format!("{queue}.migrating")
}

/// Replaces every queue of `topology` that the broker holds with other arguments, moving its messages, and
/// declares the whole topology. Safe to run again after an interruption: a holding queue left behind is
/// emptied into its queue.
pub async fn migrate(conn: &Connection, topology: &Topology) -> anyhow::Result<Report> {
    let mut queues = Vec::new();
    for work in topology.work_queues() {
        queues.push((Topology::dead_letter_queue(&work), topology.dead_letter_queue_args()));
        queues.push((work.clone(), topology.work_queue_args(&work)));
    }
    let channel = confirm_channel(conn).await?;
    let mut report = Report::default();
    for (queue, args) in &queues {
        if declares_as(conn, queue, args).await? {
            report.unchanged.push(queue.clone());
            continue;
        }
        let holding = holding_queue(queue);
        step(channel.queue_declare(
            holding.as_str().into(),
            QueueDeclareOptions::durable(),
            topology.dead_letter_queue_args(),
        ))
        .await?;
        let moved = drain(&channel, queue, &holding).await?;
        delete_empty(&channel, queue).await?;
        tracing::info!(%queue, moved, "emptied into its holding queue");
    }
    // A fresh channel for the new queues: RabbitMQ (3.10 at least) keeps per channel what kind a queue name
    // was, and a publish on the old channel into the quorum queue now under that name crashes the channel.
    let _ = channel.close(200, "emptied".into()).await;
    let channel = confirm_channel(conn).await?;
    step(topology.declare(&channel)).await?;
    for (queue, _) in &queues {
        let holding = holding_queue(queue);
        // Only queues replaced now, or left half-done by an earlier run, have a holding queue.
        if !exists(conn, &holding).await? {
            continue;
        }
        let moved = drain(&channel, &holding, queue).await?;
        delete_empty(&channel, &holding).await?;
        // A holding queue left by an interrupted run is emptied too: its messages are back where they belong.
        report.migrated.push(Migrated { queue: queue.clone(), messages: moved });
    }
    let _ = channel.close(200, "migrated".into()).await;
    Ok(report)
}

/// Whether `queue` is absent or already declared with `args` (declaring it then is harmless: it is made now
/// or left as it is). A refusal for other arguments closes the channel, hence a channel of its own.
async fn declares_as(conn: &Connection, queue: &str, args: &FieldTable) -> anyhow::Result<bool> {
    let channel = step(conn.create_channel()).await?;
    match step(channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), args.clone())).await {
        Ok(_) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(true)
        }
        Err(e) if e.downcast_ref::<lapin::Error>().is_some_and(is_mismatch) => Ok(false),
        Err(e) => Err(e.context(format!("checking {queue}"))),
    }
}

/// Whether `queue` exists (a passive declare; a missing queue closes the channel, hence one of its own).
async fn exists(conn: &Connection, queue: &str) -> anyhow::Result<bool> {
    let channel = step(conn.create_channel()).await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let found = step(channel.queue_declare(queue.into(), passive, FieldTable::default())).await.is_ok();
    if found {
        let _ = channel.close(200, "checked".into()).await;
    }
    Ok(found)
}

/// Moves every message of `from` into `to`, in order: each is copied (confirmed) before it is acked.
async fn drain(channel: &Channel, from: &str, to: &str) -> anyhow::Result<u64> {
    let mut moved = 0u64;
    while let Some(message) = step(channel.basic_get(from.into(), BasicGetOptions::default())).await? {
        let delivery = message.delivery;
        let confirm = step(channel.basic_publish(
            "".into(),
            to.into(),
            BasicPublishOptions::default(),
            &delivery.data,
            delivery.properties.clone(),
        ))
        .await?;
        anyhow::ensure!(!step(confirm).await?.is_nack(), "RabbitMQ refused a copy into {to}; nothing was lost");
        step(delivery.ack(BasicAckOptions::default())).await?;
        moved += 1;
    }
    Ok(moved)
}

/// Deletes a queue that was just drained, unless a message arrived since (a service still running): then the
/// command stops instead of deleting it with the queue. (Quorum queues refuse `if-empty` deletes, hence the
/// count first.)
async fn delete_empty(channel: &Channel, queue: &str) -> anyhow::Result<()> {
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let left = step(channel.queue_declare(queue.into(), passive, FieldTable::default())).await?.message_count();
    anyhow::ensure!(
        left == 0,
        "{queue} received {left} message(s) while it was moved: stop every ordermesh service and run the command again"
    );
    step(channel.queue_delete(queue.into(), QueueDeleteOptions::default())).await?;
    Ok(())
}

async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let channel = step(conn.create_channel()).await?;
    step(channel.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(channel)
}

/// One broker operation, bounded.
async fn step<T>(op: impl Future<Output = lapin::Result<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(STEP_TIMEOUT, op).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("RabbitMQ did not answer within {STEP_TIMEOUT:?}"),
    }
}
