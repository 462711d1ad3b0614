"""Depth and uncertainty metrics: pure functions of arrays."""
