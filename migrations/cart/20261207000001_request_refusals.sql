-- A request's refusal (404 not in the cart, 409 not enough stock) is its key's answer too, kept beside the
-- applied answers: a copy of the same request that arrives later (the client's retry overtaking it, or a first
-- copy delayed past its caller's patience) must answer the refusal and change nothing, and a refusal that waits
-- for a copy still committing under the same key answers as that copy. NULL for an applied request.
ALTER TABLE cart_requests ADD COLUMN refusal JSONB;
