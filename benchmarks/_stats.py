"""Latency summaries shared by the benchmarks."""

from __future__ import annotations

__all__ = ["percentiles_ms"]


def percentiles_ms(latencies_s: list[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds of latencies given in seconds."""
    lat = sorted(latencies_s)
    if not lat:
        return (0.0, 0.0, 0.0)
    return (lat[len(lat) // 2] * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3,
            lat[-1] * 1e3)
