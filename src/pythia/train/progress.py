"""Training progress that shows where a terminal is not: a tqdm bar on a TTY, otherwise (piped,
redirected, under a scheduler or `make`) one plain line every `interval` seconds with the step,
the member's tokens per second, the suite's share done and an ETA, so a log shows that training
moves and how fast (a busy neighbour slowing it down is visible as a falling tokens/s).
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL_S = 30.0  # seconds between two plain progress lines


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class PlainProgress:
    """The subset of tqdm's interface the trainer uses (update, set_postfix_str, close), printed
    as plain lines at a steady interval: the first after `interval` seconds, the last at close."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", interval: float | None = None,
                 stream: TextIO | None = None, unit: str = "step"):
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self._start_n, self._start = initial, time.monotonic()
        self._last_print = self._start
        self._closed = False

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last_print >= self.interval:
            self._print()

    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.0f}%)"]
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{_duration(elapsed)} elapsed")
        if done > 0 and self.n < self.total:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - self.n))}")
        return ", ".join(parts)

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_print = time.monotonic()

    def close(self) -> None:
        if not self._closed and self.n > self._start_n:
            self._print()
        self._closed = True


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "train", unit: str = "step"):
    """A tqdm bar on a terminal, plain lines elsewhere, nothing when not `enabled`."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, initial, desc, unit=unit)
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, desc=desc, dynamic_ncols=True)
