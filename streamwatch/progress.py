"""A progress line for long work: a bar on a terminal, a line every 10% in logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, out: TextIO | None = None) -> None:
        self.total, self.label = total, label
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self._last_decile = -1

    def update(self, done: int) -> None:
        fraction = min(1.0, done / self.total) if self.total else 1.0
        rate = done / max(time.monotonic() - self.started, 1e-9)
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.out.write(f"\r{self.label} [{bar:<30}] {fraction:6.1%} {rate:,.0f}/s")
            self.out.flush()
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            self.out.write(
                f"{self.label}: {fraction:.0%} ({done:,} of {self.total:,}, {rate:,.0f}/s)\n"
            )

    def close(self) -> None:
        if self.tty:
            self.out.write("\n")
