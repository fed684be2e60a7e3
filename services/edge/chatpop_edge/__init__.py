"""The ChatPop edge: the only public entry (REST v1, WebSocket fan-out, health) in front of the services."""
