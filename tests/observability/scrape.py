"""Read a process's Prometheus exposition with prometheus-client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Exposition", "sample", "scrape"]

_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


@dataclass(frozen=True)
class Exposition:
    text: str

    def names(self) -> set[str]:
        """Every name a query may use: families and their samples (`x_total`, `x_bucket`, ...),
        also for a labelled family that has no samples yet."""
        out: set[str] = set()
        for family in text_string_to_metric_families(self.text):
            out.add(family.name)
            out.update(s.name for s in family.samples)
            out.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        return out


async def scrape(base_url: str, path: str = "/metrics") -> Exposition:
    async with httpx.AsyncClient(timeout=10) as c:
        resp = await c.get(base_url + path)
    resp.raise_for_status()
    return Exposition(resp.text)


def sample(exposition: Exposition, metric: str, /, **labels: str) -> float:
    """The sum of `metric`'s samples whose labels include `labels` (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition.text):
        for s in family.samples:
            if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
