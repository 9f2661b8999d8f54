"""Placeholder, replaced by the metrics command."""
