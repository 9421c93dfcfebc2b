-- Fills a checkout database with 1,000,000 final orders (4.6 million timeline entries, one line each) spread over
-- the last 14 hours, plus five orders stuck waiting for payment: the dashboard load measurement in BENCHMARKS.md.
-- psql -h 127.0.0.1 -U postgres -d om_bench_checkout -f docs/benchmarks/dashboard-1m-orders.sql
\timing on
INSERT INTO orders (order_id, client_id, status, step, total_cents, next_action_at, version, created_at, updated_at, reason)
SELECT 'bulk-' || lpad(g::text, 7, '0'), 'client-' || (g % 20000),
       CASE WHEN g % 10 < 8 THEN 'CONFIRMED' WHEN g % 10 = 8 THEN 'REJECTED' ELSE 'PAYMENT_DECLINED' END,
       'done', 1000 + g % 5000, NULL, 4,
       now() - make_interval(secs => (1000000 - g) * 0.05),
       now() - make_interval(secs => (1000000 - g) * 0.05) + make_interval(secs => 0.05 + (g % 300) / 1000.0), ''
FROM generate_series(1, 1000000) g;
INSERT INTO order_lines (order_id, product_id, quantity, unit_price_cents)
SELECT order_id, 'product-' || (hashtext(order_id) & 255), 1, total_cents FROM orders WHERE order_id LIKE 'bulk-%';
INSERT INTO order_steps (order_id, step, outcome, detail, at)
SELECT o.order_id, s.step, s.outcome, '', o.created_at + make_interval(secs => s.off)
FROM orders o CROSS JOIN LATERAL (VALUES
   ('created', 'ok', 0.0, 0),
   ('reserve', CASE WHEN o.status = 'REJECTED' THEN 'rejected' ELSE 'ok' END, 0.006, 1),
   ('payment', 'requested', 0.007, 2),
   ('payment', CASE WHEN o.status = 'PAYMENT_DECLINED' THEN 'declined' ELSE 'ok' END, 0.030 + (hashtext(o.order_id) & 63) / 1000.0, 3),
   ('commit', 'ok', 0.040 + (hashtext(o.order_id) & 63) / 1000.0, 4)) s(step, outcome, off, n)
WHERE o.order_id LIKE 'bulk-%'
  AND (o.status <> 'REJECTED' OR s.n <= 1)
  AND (o.status <> 'PAYMENT_DECLINED' OR s.n <= 3)
ORDER BY o.created_at, s.n;
-- A few orders stuck waiting for payment for ten minutes.
INSERT INTO orders (order_id, client_id, status, step, total_cents, next_action_at, version, created_at, updated_at, payment_attempts)
SELECT 'stuck-' || g, 'client-' || g, 'PAYMENT_PENDING', 'await_payment', 2500, now() + interval '1 hour', 2,
       now() - interval '10 minutes', now() - interval '10 minutes', 1
FROM generate_series(1, 5) g;
INSERT INTO order_steps (order_id, step, outcome, detail, at)
SELECT 'stuck-' || g, s.step, s.outcome, s.detail, now() - interval '10 minutes'
FROM generate_series(1, 5) g, (VALUES ('created','ok',''),('reserve','ok',''),('payment','requested','attempt 1')) s(step,outcome,detail);
VACUUM ANALYZE orders;
VACUUM ANALYZE order_steps;
VACUUM ANALYZE order_lines;
SELECT count(*) AS orders FROM orders;
SELECT count(*) AS steps FROM order_steps;
SELECT pg_size_pretty(pg_database_size(current_database()));
