-- Every order records the channel it came from (the placing API key's: web, phone, sales-desk, ...);
-- orders from before channels, and from a gateway without keys, are 'direct'.
ALTER TABLE orders ADD COLUMN channel TEXT NOT NULL DEFAULT 'direct'
    CONSTRAINT orders_channel_format CHECK (channel ~ '^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$');
-- The dashboard filters the latest orders by channel.
CREATE INDEX orders_by_channel ON orders (channel, created_at DESC);
