"""`seed_convergence`: how alike the seeds of one size predict, step by step (Fehlauer, Mahowald
and Pimentel 2025, on PolyPythias).

For every size (members that differ only by seed; forks are not seeds) and every step that at
least two of its seeds have: the symmetric KL 1/2 [KL(p_a || p_b) + KL(p_b || p_a)] between the
next-token distributions of seeds a and b at every token of the probe (the `token_curves`
probe: `--probe-windows`, `--probe-data`), averaged over the tokens and then over every pair of
seeds. Rows: metric `symmetric_kl`, member empty, size set, step set (nats), task = the size
(the table's row key has no size column: two sizes at one step stay two rows).

Each checkpoint is loaded once per step; only its final hidden states (tokens x d) and output
embedding stay in memory, and the logits are formed in row chunks (`pythia.divergence`), so two
160m-sized models on 64k tokens need ~1.2 GB besides the one model being read. Values are kept
per (size, step) with the digests of the checkpoints they read in
`artifacts/seed_convergence/entries.json`: a run that gained checkpoints computes only the new
steps. A run whose sizes have a single seed each is skipped with one warning.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from ..io import write_json_atomic
from ._probe import PROBE_OPTIONS, Probe, read_probe
from .base import Analysis, AnalysisError, Option, register
from .seeds import shapes_of

ENTRIES = "entries.json"


@register
class SeedConvergence(Analysis):
    name = "seed_convergence"
    summary = "symmetric KL between the next-token distributions of the seeds of each size, per step, on the probe"
    scope = "run"
    version = 1
    options = PROBE_OPTIONS + (
        Option("convergence_steps", str, None, "steps to compare: all (default), last, a list 0,16,256 or A:B"),
        Option("val_batch", int, 8, "windows per forward pass", affects_result=False),
        Option("kl_memory_mb", int, 512, "MiB of log-probability chunks (all seeds of a size at once)",
               affects_result=False),
    )

    def reads(self, analysis: str) -> bool:
        return False  # reads checkpoints, not rows: see run_inputs

    def check(self, run, members) -> None:
        read_probe(run, self.opts, {})
        if self.opts["kl_memory_mb"] < 1:
            raise AnalysisError(f"--kl-memory-mb must be >= 1, got {self.opts['kl_memory_mb']}")

    def _plan(self, run, members) -> dict[str, list[tuple[int, list]]]:
        """{size: [(step, seeds with that checkpoint)]} for steps with >= 2 seeds."""
        from ..run import RunError, select_steps

        plan = {}
        for shape, ms in shapes_of([m for m in members if m.base is None]).items():
            shared = sorted({s for m in ms for s in m.steps if sum(s in o.steps for o in ms) >= 2})
            try:
                chosen = select_steps(shared, self.opts["convergence_steps"] or "all", [])
            except RunError as exc:
                raise AnalysisError(f"--convergence-steps: {exc}") from None
            plan[shape] = [(s, [m for m in ms if s in m.steps]) for s in chosen]
        return plan

    def run_inputs(self, run, members) -> str:
        ident = [(shape, s, [(m.name, m.checkpoint(s).digest) for m in ms])
                 for shape, steps in self._plan(run, members).items() for s, ms in steps]
        return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    def compute_run(self, run, store, members) -> list[dict]:
        plan = self._plan(run, members)
        single = [shape for shape, steps in plan.items() if not steps]
        if single:
            what = ("no size has two seeds with a common checkpoint" if len(single) == len(plan) else
                    "sizes without two seeds at a common checkpoint")
            warnings.warn(f"seed_convergence: {what} ({', '.join(single)}): nothing to compare there", stacklevel=2)
        if all(not steps for steps in plan.values()):
            return []
        pr = read_probe(run, self.opts, {})
        path = Path(run.results_dir) / "artifacts" / self.name / ENTRIES
        entries = _read_entries(path)
        rows = []
        for shape, steps in plan.items():
            for step, ms in steps:
                key = hashlib.sha256(json.dumps([pr.digest, [(m.name, m.checkpoint(step).digest) for m in ms]])
                                     .encode()).hexdigest()
                entry = entries.get(f"{shape}@{step}")
                if entry is None or entry.get("key") != key or self.forced:
                    pairs = self._pairs(ms, step, pr)
                    entry = {"key": key, "value": float(np.mean(list(pairs.values()))), "pairs": pairs}
                    entries[f"{shape}@{step}"] = entry
                    write_json_atomic(path, entries)  # a kill loses at most the step in progress
                m0 = ms[0]
                tokens = step * m0.global_batch * m0.seq_len if m0.global_batch and m0.seq_len else None
                rows.append({"member": "", "size": shape, "seed": None, "step": step, "tokens": tokens,
                             "task": shape, "metric": "symmetric_kl", "value": entry["value"]})
        return rows

    def _pairs(self, members, step: int, pr: Probe) -> dict[str, float]:
        from ..divergence import pairwise_symmetric_kl

        hidden, weight = [], []
        for m in members:
            h, w = final_hidden(m.checkpoint(step).load(device=self.device, dtype=self.dtype), pr.windows,
                                self.opts["val_batch"], self.device)
            hidden.append(h)
            weight.append(w)
        kl = pairwise_symmetric_kl(hidden, weight, budget=self.opts["kl_memory_mb"] * 2**20)
        return {f"{members[i].name}|{members[j].name}": v for (i, j), v in kl.items()}


def final_hidden(model, windows: np.ndarray, batch: int, device=None):
    """(final-LayerNorm states of every predicting position of windows (W*S, d), the output
    embedding (V, d)); the rest of the model can then be freed."""
    import torch

    from ..memorization import trunk_hidden

    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1], np.int64))
    dev = device or next(model.parameters()).device
    with torch.no_grad():
        parts = [trunk_hidden(model, x[a:a + batch].to(dev)).reshape(-1, model.config.hidden_size)
                 for a in range(0, x.shape[0], batch)]
    return torch.cat(parts), model.embed_out.weight.detach()


def _read_entries(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}  # a cache: recomputed
    return found if isinstance(found, dict) else {}
