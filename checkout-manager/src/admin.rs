//! The operators' read-only view of orders (the gateway's `/admin/…` API): each figure is one bounded query
//! that stays cheap on millions of orders (an index range, the unfinished orders only, or the latest steps).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ordermesh_messages::admin::{
    Count, Entry, MinuteCount, OrderDetail, OrderSummary, OrdersPage, OrdersRequest, Overview, OverviewRequest,
    StepStats,
};
use sqlx::PgPool;

use crate::error::CheckoutError;

/// How many of the latest saga steps the step figures are drawn from, at most.
const STEP_SAMPLE: i64 = 20_000;
/// Slowest and stuck orders shown, each.
const SHOWN: i64 = 10;
/// How many of the orders created in the window are searched for the slowest.
const SLOW_SAMPLE: i64 = 5_000;

/// An order as the lists show it. Statements that read one through a subquery or a `UNION` name its columns
/// `"name!"`: the checker cannot see through them that no column is null.
struct SummaryRow {
    order_id: String,
    client_id: String,
    status: String,
    step: String,
    total_cents: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    channel: String,
}

impl From<SummaryRow> for OrderSummary {
    fn from(r: SummaryRow) -> Self {
        Self {
            order_id: r.order_id,
            client_id: r.client_id,
            status: r.status,
            step: r.step,
            total_cents: r.total_cents,
            created_at: r.created_at,
            updated_at: r.updated_at,
            channel: r.channel,
        }
    }
}

struct StepRow {
    step: String,
    ok: i64,
    retry: i64,
    failed: i64,
    refused: i64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn counts(rows: impl IntoIterator<Item = (String, i64)>) -> Vec<Count> {
    rows.into_iter().map(|(key, count)| Count { key, count }).collect()
}

/// The latest orders, newest first, or those of one order id or client id; of one channel, if asked.
pub async fn orders(pool: &PgPool, request: &OrdersRequest) -> Result<OrdersPage, CheckoutError> {
    let limit = i64::from(request.limit.clamp(1, 200));
    let channel = request.channel.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let rows: Vec<SummaryRow> = match (request.search.as_deref().map(str::trim).filter(|s| !s.is_empty()), channel) {
        (None, None) => {
            sqlx::query_as!(
                SummaryRow,
                "SELECT order_id, client_id, status, step, total_cents, created_at, updated_at, channel
                 FROM orders ORDER BY created_at DESC LIMIT $1",
                limit
            )
            .fetch_all(pool)
            .await?
        }
        (None, Some(channel)) => {
            sqlx::query_as!(
                SummaryRow,
                "SELECT order_id, client_id, status, step, total_cents, created_at, updated_at, channel
                 FROM orders WHERE channel = $2 ORDER BY created_at DESC LIMIT $1",
                limit,
                channel
            )
            .fetch_all(pool)
            .await?
        }
        (Some(search), channel) => {
            sqlx::query_as!(
                SummaryRow,
                r#"(SELECT order_id AS "order_id!", client_id AS "client_id!", status AS "status!", step AS "step!",
                           total_cents AS "total_cents!", created_at AS "created_at!", updated_at AS "updated_at!",
                           channel AS "channel!"
                    FROM orders WHERE order_id = $1 AND ($3::text IS NULL OR channel = $3))
                   UNION
                   (SELECT order_id, client_id, status, step, total_cents, created_at, updated_at, channel
                    FROM orders WHERE client_id = $1 AND ($3::text IS NULL OR channel = $3)
                    ORDER BY created_at DESC LIMIT $2)
                   ORDER BY 6 DESC LIMIT $2"#,
                search,
                limit,
                channel
            )
            .fetch_all(pool)
            .await?
        }
    };
    Ok(OrdersPage { orders: rows.into_iter().map(Into::into).collect() })
}

/// Where orders stand now and over the window.
pub async fn overview(pool: &PgPool, request: &OverviewRequest) -> Result<Overview, CheckoutError> {
    let window = i32::try_from(request.window_minutes.clamp(1, 60)).unwrap_or(15);
    let stuck_after = f64::from(request.stuck_after_seconds.max(1));

    // Unfinished orders are the ones with a next action: the partial index `orders_due` holds just them.
    let in_flight = sqlx::query!(
        r#"SELECT status, count(*) AS "count!" FROM orders WHERE next_action_at IS NOT NULL
           GROUP BY status ORDER BY status"#,
    )
    .fetch_all(pool)
    .await?;
    let waiting_on = sqlx::query!(
        r#"SELECT step, count(*) AS "count!" FROM orders WHERE next_action_at IS NOT NULL GROUP BY step ORDER BY step"#,
    )
    .fetch_all(pool)
    .await?;
    let per_minute = sqlx::query_as!(
        MinuteCount,
        r#"SELECT date_trunc('minute', created_at) AS "minute!", status, count(*) AS "count!" FROM orders
           WHERE created_at > now() - make_interval(mins => $1)
           GROUP BY 1, 2 ORDER BY 1, 2"#,
        window
    )
    .fetch_all(pool)
    .await?;
    let mut recent: HashMap<String, i64> = HashMap::new();
    for m in &per_minute {
        *recent.entry(m.status.clone()).or_default() += m.count;
    }
    let mut recent_by_status: Vec<Count> = recent.into_iter().map(|(key, count)| Count { key, count }).collect();
    recent_by_status.sort_by(|a, b| a.key.cmp(&b.key));

    // A step's latency is the time since the entry before it in the same order's timeline.
    let steps = sqlx::query_as!(
        StepRow,
        r#"WITH latest AS (
           SELECT id, order_id, step, outcome, at FROM order_steps ORDER BY id DESC LIMIT $2
         ), timed AS (
           SELECT step, outcome, at,
                  EXTRACT(EPOCH FROM at - lag(at) OVER (PARTITION BY order_id ORDER BY id)) * 1000 AS ms
           FROM latest
         )
         SELECT step AS "step!",
                count(*) FILTER (WHERE outcome = 'ok') AS "ok!",
                count(*) FILTER (WHERE outcome = 'retry') AS "retry!",
                count(*) FILTER (WHERE outcome = 'failed') AS "failed!",
                count(*) FILTER (WHERE outcome IN ('rejected', 'declined')) AS "refused!",
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::float8 AS p50_ms,
                (percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::float8 AS p99_ms
         FROM timed
         WHERE step IN ('reserve', 'payment', 'commit', 'roll_back') AND outcome <> 'requested'
           AND at > now() - make_interval(mins => $1)
         GROUP BY step"#,
        window,
        STEP_SAMPLE
    )
    .fetch_all(pool)
    .await?;
    let order = ["reserve", "payment", "commit", "roll_back"];
    let mut steps: Vec<StepStats> = steps
        .into_iter()
        .map(|r| StepStats {
            step: r.step,
            ok: r.ok,
            retry: r.retry,
            failed: r.failed,
            refused: r.refused,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
        })
        .collect();
    steps.sort_by_key(|s| order.iter().position(|o| *o == s.step));

    let slowest = sqlx::query_as!(
        SummaryRow,
        r#"SELECT order_id AS "order_id!", client_id AS "client_id!", status AS "status!", step AS "step!",
                  total_cents AS "total_cents!", created_at AS "created_at!", updated_at AS "updated_at!",
                  channel AS "channel!"
           FROM (
             SELECT * FROM orders WHERE created_at > now() - make_interval(mins => $1)
             ORDER BY created_at DESC LIMIT $2
           ) recent WHERE step = 'done' ORDER BY updated_at - created_at DESC LIMIT $3"#,
        window,
        SLOW_SAMPLE,
        SHOWN
    )
    .fetch_all(pool)
    .await?;
    let stuck = sqlx::query_as!(
        SummaryRow,
        "SELECT order_id, client_id, status, step, total_cents, created_at, updated_at, channel FROM orders
         WHERE next_action_at IS NOT NULL AND created_at < now() - make_interval(secs => $1)
         ORDER BY created_at LIMIT $2",
        stuck_after,
        SHOWN
    )
    .fetch_all(pool)
    .await?;

    let ids: Vec<&str> = slowest.iter().chain(&stuck).map(|o| o.order_id.as_str()).collect();
    let entries = sqlx::query!(
        "SELECT order_id, step, outcome, detail, at FROM order_steps WHERE order_id = ANY($1) ORDER BY order_id, id",
        &ids as &[&str]
    )
    .fetch_all(pool)
    .await?;
    let mut timelines: HashMap<String, Vec<Entry>> = HashMap::new();
    for e in entries {
        timelines.entry(e.order_id).or_default().push(Entry {
            step: e.step,
            outcome: e.outcome,
            detail: e.detail,
            at: e.at,
        });
    }
    let now = Utc::now();
    let detail = |row: SummaryRow, finished: bool| {
        let end = if finished { row.updated_at } else { now };
        let took_ms = (end - row.created_at).num_milliseconds();
        let timeline = timelines.get(&row.order_id).cloned().unwrap_or_default();
        OrderDetail { order: row.into(), took_ms, timeline }
    };

    Ok(Overview {
        generated_at: now,
        window_minutes: u32::try_from(window).unwrap_or(15),
        in_flight: counts(in_flight.into_iter().map(|r| (r.status, r.count))),
        waiting_on: counts(waiting_on.into_iter().map(|r| (r.step, r.count))),
        recent_by_status,
        per_minute,
        steps,
        slowest: slowest.into_iter().map(|r| detail(r, true)).collect(),
        stuck: stuck.into_iter().map(|r| detail(r, false)).collect(),
    })
}
