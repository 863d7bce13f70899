"""Per-member telemetry: metrics.jsonl (one line per update), evals.jsonl (one line per checkpoint).

metrics.jsonl  {"step", "loss", "lr", "grad_norm", "loss_scale", "skipped", "tokens_per_s",
                "batch_fp", "consumed_samples", "time"}; `step` is the number of updates done
               after this line's update (1-based, = the checkpoint name it would produce).
               A fork (pythia.train.intervention) adds "changed_tokens": how many tokens of the
               batch its transform changed; "batch_fp" is then the transformed batch's.
evals.jsonl    {"step", "val_loss", "val_samples", "val_tokens"} at every checkpoint step;
               without validation data: {"step", "val_loss": null, "note": "..."}.
On resume from checkpoint N, lines with step > N are dropped (file rewritten atomically), so
neither log has duplicates. Optional TensorBoard mirrors the scalars under RUN/{member}/tb.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..io import write_text_atomic


def batch_fingerprint(tokens: np.ndarray) -> str:
    """First 16 hex chars of blake2b over the (B, S+1) int64 bytes of a global batch."""
    arr = np.ascontiguousarray(tokens, dtype=np.int64)
    return hashlib.blake2b(arr.tobytes(), digest_size=32).hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict]:
    """Records of a .jsonl file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def read_jsonl_after(path: Path, step: int, block: int = 1 << 16) -> list[dict]:
    """Records of a step-ordered .jsonl (metrics.jsonl: appended in step order, truncated on
    resume) after its last record with an integer `step` <= `step`, oldest first. Read backwards
    from the end, so the cost is that of the records returned, not of the file (a checkpoint's
    1,000 updates, not 143,000). Lines that do not parse are skipped, as read_jsonl does."""
    path = Path(path)
    if not path.is_file():
        return []
    out: list[dict] = []
    with open(path, "rb") as f:
        pos, carry = f.seek(0, 2), b""
        while pos > 0:
            n = min(block, pos)
            pos -= n
            f.seek(pos)
            lines = (f.read(n) + carry).split(b"\n")
            carry = lines.pop(0) if pos > 0 else b""  # maybe a partial line: completed by the block before
            for raw in reversed(lines):
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
                    return out[::-1]
                out.append(record)
    return out[::-1]


def truncate_jsonl(path: Path, keep_through_step: int) -> list[dict]:
    """Rewrite `path` keeping only records with step <= keep_through_step; returns them."""
    kept = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= keep_through_step]
    if Path(path).exists():
        write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return kept


class MemberLog:
    """Append-only writers for one member's metrics.jsonl / evals.jsonl (+ TensorBoard)."""

    def __init__(self, member_dir: Path, resume_step: int | None, tensorboard: bool = False):
        self.member_dir = Path(member_dir)
        self.member_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.member_dir / "metrics.jsonl"
        self.evals_path = self.member_dir / "evals.jsonl"
        keep = -1 if resume_step is None else resume_step
        truncate_jsonl(self.metrics_path, keep)
        self.eval_steps = {r["step"] for r in truncate_jsonl(self.evals_path, keep)}
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._evals = open(self.evals_path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events written after the resumed checkpoint by a killed run.
            self._tb = SummaryWriter(str(self.member_dir / "tb"), purge_step=(resume_step or 0) + 1)

    def log_step(self, record: dict) -> None:
        self._metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key in ("loss", "lr", "grad_norm", "loss_scale", "tokens_per_s"):
                value = record.get(key)
                if isinstance(value, (int, float)) and np.isfinite(value):
                    self._tb.add_scalar(f"train/{key}", value, record["step"])

    def log_eval(self, record: dict) -> None:
        if record["step"] in self.eval_steps:
            return
        self.eval_steps.add(record["step"])
        self._evals.write(json.dumps(record, sort_keys=True) + "\n")
        self._evals.flush()
        if self._tb is not None and record.get("val_loss") is not None:
            self._tb.add_scalar("val/loss", record["val_loss"], record["step"])

    def close(self) -> None:
        self._metrics.close()
        self._evals.close()
        if self._tb is not None:
            self._tb.close()
