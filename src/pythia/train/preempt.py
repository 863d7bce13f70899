"""Graceful stop on SIGTERM / SIGINT, as cluster schedulers preempt jobs.

The first signal only sets a flag: the loop finishes the update in progress, writes a
resumable checkpoint at that step (with optimizer state whatever train.optimizer_state_every
says), and ends with TrainingInterrupted, which `pythia train` turns into exit status
128 + signal number (143 for SIGTERM, 130 for SIGINT), the shell's convention for "stopped by
a signal": a job script can tell "resumable, re-run me" from success (0) and failure (1, 2).
A second signal acts as it would without this module (Ctrl-C twice stops at once; the
half-written checkpoint is then discarded on the next start, see checkpoint.py).
Under torchrun every rank gets the signal; the ranks agree on the step to stop after
(DistContext.any), and torchrun's own grace period before SIGKILL must cover one step and one
checkpoint.
"""
from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, signum: int, member: str, step: int):
        self.signum, self.member, self.step = signum, member, step
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after update {step} of {member}; checkpoint step{step} saved. "
                         "Re-run the same command to resume exactly.")


class StopSignal:
    """Context manager: while active, SIGTERM/SIGINT set `.signum` instead of stopping the process.

    Only the main thread can install signal handlers; elsewhere this is a no-op flag."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # a second one acts as usual

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
