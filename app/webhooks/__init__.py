"""Webhooks: operators' endpoints, the durable outbox, signed deliveries (Standard Webhooks)."""
