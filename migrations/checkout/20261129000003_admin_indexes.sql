-- The operators' view (GET /admin/...) lists the latest orders, searches by client, and counts the orders
-- of the last minutes; these indexes keep each of those a bounded index scan on millions of orders.
CREATE INDEX orders_by_created ON orders (created_at DESC);
CREATE INDEX orders_by_client ON orders (client_id, created_at DESC);
