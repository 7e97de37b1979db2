"""Per-stage wall-clock timings of one case, and of start-up."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

CASE_STAGES = ("read", "localize", "preprocess", "network", "export", "write")


@dataclass
class StageTimer:
    """Seconds spent per named stage; `sync` is called before each clock read (CUDA synchronise)."""
    seconds: dict[str, float] = field(default_factory=dict)
    sync: object = None

    @contextmanager
    def stage(self, name: str):
        if self.sync:
            self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def line(self) -> str:
        parts = [f"{k} {v:.2f}s" for k, v in self.seconds.items()]
        return ", ".join(parts) + f" (total {sum(self.seconds.values()):.2f}s)"
