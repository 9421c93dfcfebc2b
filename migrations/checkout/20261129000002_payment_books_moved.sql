-- The simulated payment provider is its own service now (payment-gateway, database ordermesh_payment):
-- checkout-manager keeps no payment books.
DROP TABLE IF EXISTS payment_charges;
DROP TABLE IF EXISTS payment_accounts;
