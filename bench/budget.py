"""A wall-clock budget for `make bench`: optional measurements run only while they fit."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.common import log


@dataclass
class Budget:
    """Seconds allowed from construction; `allows(estimate)` says whether a measurement still fits."""

    seconds: float
    reserve: float = 20.0  # kept for writing the report and plots
    started: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def remaining(self) -> float:
        return self.seconds - self.reserve - self.elapsed

    def allows(self, estimate: float, what: str = "") -> bool:
        """True if `estimate` seconds fit in what is left; a refusal is logged and remembered."""
        if estimate <= self.remaining:
            return True
        if what:
            self.skipped.append(f"{what} (needed ~{estimate:.0f} s, {max(self.remaining, 0):.0f} s left)")
            log(f"  budget: skipping {what} (needs ~{estimate:.0f} s, {max(self.remaining, 0):.0f} s left)")
        return False

    def rounds(self, per_round: float, wanted: int, minimum: int = 1) -> int:
        """As many rounds as fit, between `minimum` and `wanted`."""
        if per_round <= 0:
            return wanted
        return max(minimum, min(wanted, int(self.remaining // per_round)))
