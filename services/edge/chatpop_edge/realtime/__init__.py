"""WebSocket sessions and the per-room fan-out."""
