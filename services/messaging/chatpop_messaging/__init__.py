"""ChatPop messaging: the message log (Postgres), the hot cache (Redis) and live fan-out."""
