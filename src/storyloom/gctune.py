"""Garbage-collector settings for the long-running service processes (API and workers).

With 250 chapter runs in a worker, CPython's full (generation 2) collections scanned the whole
heap and held the GIL for 100–280 ms (measured with `gc.callbacks`), stalling the event loop and
the write thread together: every event in flight at that moment arrived 0.3 s late. Objects alive
after start-up are moved out of the collector's sight (`gc.freeze`), and full collections are made
rare (one per 1,000 middle ones instead of 10). Young collections keep their default size: raised
to 50,000 objects, each of them took 20–80 ms. Reference counting still frees almost everything,
and cycles are still collected.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

# (young, middle, full): the defaults are (700, 10, 10). A full collection also still waits until
# long-lived objects grew by 25%.
_THRESHOLDS = (700, 10, 1000)


def tune_gc() -> None:
    """Call once a process has started up (imports done, services built, code warmed up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_THRESHOLDS)
