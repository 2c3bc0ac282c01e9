"""Gateway integrations: each turns a peer's events into usage records sent through metering.client."""
