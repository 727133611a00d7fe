"""Defences against hostile clients: failure budgets, outbound address policy."""
