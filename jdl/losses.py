"""Losses (placeholder, being written)."""
