"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from typing import Any, Callable


def best_of(repeats: int, function: Callable[[], Any]) -> tuple[float, Any]:
    """Return the shortest wall-clock time of ``repeats`` calls of ``function`` and the last result."""
    best, value = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        best = min(best, time.perf_counter() - started)
    return best, value
