"""Metrics (placeholder, being written)."""
