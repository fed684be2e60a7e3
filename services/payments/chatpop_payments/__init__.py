"""payments: Stripe payments, the ledger and fulfilment (`python -m chatpop_payments`)."""
