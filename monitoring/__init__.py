"""Prometheus metrics, prequential quality trackers and the HTTP endpoints."""
