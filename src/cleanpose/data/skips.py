"""Counted skips: where the reference silently redraws or drops, we do too, but count and log it.

Reasons (`SKIP_REASONS`): missing CAMERA composed depth (training redraw / empty test result),
unreadable colour image (redraw), drawn or detected instance without usable pixels (redraw /
instance dropped), test detection with at most 16 usable pixels (dropped, the reference rule),
test image without any kept detection (result with zero predictions).
"""

from __future__ import annotations

import logging
import multiprocessing
import os

logger = logging.getLogger(__name__)

SKIP_REASONS = ("missing_depth", "unreadable_color", "empty_instance", "few_points", "no_detection")
"""Kinds of counted skips (see the module docstring)."""


class SkipCounter:
    """Per-reason skip counts shared between the main process and DataLoader workers.

    Backed by a `multiprocessing.Array`, so increments made in worker processes are visible to the
    trainer (pass the dataset to the loader; workers inherit the array). Call `reset` at epoch start
    and `counts` at epoch end.
    """

    def __init__(self) -> None:
        self._values = multiprocessing.Array("q", len(SKIP_REASONS))
        self._logged: set[str] = set()

    def add(self, reason: str, path: str | os.PathLike, detail: str = "") -> None:
        """Count one skip and log it (once per file and process)."""
        position = SKIP_REASONS.index(reason)
        with self._values.get_lock():
            self._values[position] += 1
        key = f"{reason}:{path}"
        if key not in self._logged:
            self._logged.add(key)
            logger.warning("skipped (%s): %s%s", reason, path, f" ({detail})" if detail else "")

    def counts(self) -> dict[str, int]:
        """Skips per reason since the last `reset`."""
        with self._values.get_lock():
            return dict(zip(SKIP_REASONS, self._values[:], strict=True))

    def reset(self) -> None:
        with self._values.get_lock():
            for position in range(len(SKIP_REASONS)):
                self._values[position] = 0

    def __getstate__(self):
        return {"_values": self._values, "_logged": set()}
