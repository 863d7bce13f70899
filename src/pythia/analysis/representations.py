"""`representations`: how each layer's representations, the weights and their gradients change
over training, across checkpoints, seeds and sizes (pico-analyze's learning-dynamics metrics,
Diehl Martinez et al. 2024, github.com/pico-lm/pico-analyze; here for every checkpoint of a suite).

Probe: the first `probe_windows` held-out windows of `probe_len` + 1 tokens of the validation
split (`data.valid`, or `--probe-data PREFIX`), cut as validation loss cuts them, the same for
every member and step. One forward + backward pass over the probe per checkpoint gives
- the residual stream at the last position of each window, per layer: `layer0` is the
  embedding output, `layer{l}` the stream after block l (before the final LayerNorm), stored as
  float16 (n x d per layer) in `RESULTS/artifacts/representations/{member}/step{N}/activations.safetensors`;
- the gradient of the mean next-token cross-entropy over the probe's n x probe_len tokens for
  every weight matrix (pythia.matrix_stats.is_weight_matrix).

Rows per checkpoint, `task` = the parameter's name: `per`, `condition`, `hoyer`, `gini` of the
weights; `grad_per`, `grad_hoyer`, `grad_norm` of the probe gradient; with `checkpoints.gradients`
also `train_grad_per`, `train_grad_hoyer`, `train_grad_norm` of the gradient the trainer kept (the
training batch of the update that made the checkpoint). `probe_loss` (no task) is the probe's
mean loss. Definitions in `pythia.matrix_stats`.

Then, once per `pythia analyze` (the runner's run part, `Analysis.run_part`), linear CKA per
layer (`task` = `layer{l}`) from the stored activations: `cka_final` (with the member's last
checkpoint), `cka_previous` (with the previous checkpoint analysed: the previous one of the
schedule when every step is), `cka_seeds` (mean over the other seeds of its size at the same
step; forks are not seeds). It is cached by the per-checkpoint units' keys (a re-run with
nothing new computes nothing), and every pair's CKA is kept by the identity of both sides'
activations (analysis version, probe options, weights digest) in `artifacts/representations/
cka_pairs.json`, so a recomputed checkpoint recomputes only the pairs it is part of. Activations
of a checkpoint whose weights changed since (digest) are left out with a warning until analysed
again.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import OrderedDict
from pathlib import Path

from ..io import atomic_path, write_text_atomic
from ..matrix_stats import condition_number, gini, gram, gram_cka, hoyer, is_weight_matrix, proportional_effective_rank
from .base import Analysis, AnalysisError, Option, Row, register
from .weights import singular_values

ACTIVATIONS = "activations.safetensors"
PAIRS = "cka_pairs.json"
CKA_METRICS = ("cka_final", "cka_previous", "cka_seeds")
WEIGHT_METRICS = ("per", "condition", "hoyer", "gini")
GRAD_METRICS = ("grad_per", "grad_hoyer", "grad_norm")
_GRAMS_KEPT = 64
"""Checkpoints whose Gram matrices stay in memory while the CKA pairs are computed."""


def probe_pass(model, windows, batch: int, autocast=None, device=None):
    """One forward + backward over `windows` (n, S+1): ([n x d last-position residual per layer,
    float32 CPU], the mean token loss, {matrix name: its gradient}). The model's gradients and
    mode are restored; nothing else of it changes."""
    import torch

    from ..loss import token_loss

    trunk = model.gpt_neox
    blocks = [trunk.embed_in, *trunk.layers]
    captured: list[list] = [[] for _ in blocks]
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: captured[k].append(out[:, -1].detach().float().cpu()))
             for k, m in enumerate(blocks)]
    params = dict(model.named_parameters())
    before = {n: (p.requires_grad, p.grad) for n, p in params.items()}
    was_training = model.training
    model.eval()
    tokens = int(windows.shape[0]) * (int(windows.shape[1]) - 1)
    total = 0.0
    try:
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        with torch.enable_grad():
            for start in range(0, len(windows), batch):
                loss = token_loss(model, windows[start:start + batch], autocast_dtype=autocast, reduction="sum",
                                  device=device) / tokens
                loss.backward()
                total += float(loss.detach())
        grads = {n: p.grad for n, p in params.items() if is_weight_matrix(n, p) and p.grad is not None}
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        for n, p in params.items():
            p.requires_grad_(before[n][0])
            p.grad = before[n][1]
    return [torch.cat(c) for c in captured], total, grads


def matrix_rows(weights: list[tuple[str, object]], grads: dict, grad_prefix: str = "grad_",
                with_weights: bool = True) -> list[Row]:
    """The per-matrix rows of (name, weight) pairs and their gradients (see module doc)."""
    import torch

    rows: list[Row] = []
    names = [n for n, _ in weights]
    if with_weights:
        for name, w in weights:
            if not bool(torch.isfinite(w).all()):
                raise ValueError(f"representations: parameter {name} holds NaN or infinite values")
        for (name, w), sv in zip(weights, singular_values([w for _, w in weights])):
            rows += [Row("per", proportional_effective_rank(sv), name), Row("condition", condition_number(sv), name),
                     Row("hoyer", hoyer(w), name), Row("gini", gini(w), name)]
    have = [n for n in names if n in grads and bool(torch.isfinite(grads[n]).all())]
    for name, sv in zip(have, singular_values([grads[n] for n in have])):
        g = grads[name]
        rows += [Row(f"{grad_prefix}per", proportional_effective_rank(sv), name),
                 Row(f"{grad_prefix}hoyer", hoyer(g), name),
                 Row(f"{grad_prefix}norm", float(torch.linalg.vector_norm(g, dtype=torch.float64)), name)]
    return [r for r in rows if math.isfinite(r.value)]


@register
class Representations(Analysis):
    name = "representations"
    summary = ("per-layer CKA across checkpoints and seeds; effective rank, conditioning and sparsity of "
               "weights and probe gradients")
    scope = "checkpoint"
    run_part = True
    version = 1
    options = (
        Option("probe_windows", int, 64, "held-out windows in the probe batch (n of the n x d representations)"),
        Option("probe_len", int, None, "tokens read per probe window (default: the run's sequence length)"),
        Option("probe_data", str, None, "tokenized held-out data, PREFIX of PREFIX.bin/.idx (default: the run's "
               "data.valid; needed for a Hub repo)"),
        Option("probe_batch", int, 16, "probe windows per forward/backward pass", affects_result=False),
    )

    # -- the probe ------------------------------------------------------------------------
    def _prefix(self, run) -> str:
        prefix = self.opts["probe_data"] or (run.spec.data.valid if run.spec is not None else None)
        if not prefix:
            raise AnalysisError(f"representations: {run.source} has no validation data (data.valid in its suite "
                                "spec); pass --probe-data PREFIX (a tokenized held-out .bin/.idx)")
        return str(prefix)

    def _length(self, members) -> int:
        length = self.opts["probe_len"] or next((m.seq_len for m in members if m.seq_len), None)
        if not length or length < 1:
            raise AnalysisError("representations: --probe-len must be a positive number of tokens")
        return int(length)

    def probe(self, run, members, shared: dict | None = None):
        """The probe windows (n, probe_len + 1), int64; AnalysisError when the data has fewer."""
        from ..data.indexed import validation_windows

        prefix, length, n = self._prefix(run), self._length(members), self.opts["probe_windows"]
        if n is None or n < 2:
            raise AnalysisError("representations: --probe-windows must be at least 2 (CKA compares examples)")
        key = ("representations.probe", prefix, length, n)
        if shared is not None and key in shared:
            return shared[key]
        where = f"--probe-data {prefix}" if self.opts["probe_data"] else f"the validation split data.valid ({prefix})"
        try:
            windows = validation_windows(prefix, length, n)
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"representations: cannot read probe windows from {where}: {exc}") from None
        if len(windows) < n:
            raise AnalysisError(f"representations: a probe of --probe-windows {n} windows of {length} + 1 tokens is "
                                f"larger than {where}, which holds {len(windows)}; ask for fewer windows or a "
                                "shorter --probe-len")
        if shared is not None:
            shared[key] = windows
        return windows

    def check(self, run, members) -> None:
        if (self.opts["probe_batch"] or 0) < 1:
            raise AnalysisError("representations: --probe-batch must be at least 1")
        self.probe(run, members)

    # -- per checkpoint -------------------------------------------------------------------
    def compute(self, ctx) -> list[Row]:
        import torch
        from safetensors.torch import save_file

        from ..train.checkpoint import load_gradients

        windows = self.probe(ctx.run, [ctx.member], ctx.shared)
        model = ctx.model
        acts, loss, grads = probe_pass(model, windows, self.opts["probe_batch"], ctx.autocast, ctx.device)
        weights = [(n, p.detach()) for n, p in model.named_parameters() if is_weight_matrix(n, p)]
        with torch.no_grad():
            rows = [Row("probe_loss", loss)] + matrix_rows(weights, grads)
            kept = load_gradients(ctx.checkpoint.path) if (ctx.checkpoint.path / "training_state").is_dir() else None
            if kept:
                rows += matrix_rows([(n, w) for n, w in weights if n in kept], kept, "train_grad_", with_weights=False)
        # one metadata entry: safetensors writes several in no fixed order, and the bytes must not vary
        meta = {"pythia": json.dumps({"format": "pythia-activations/1", "key": self.cache_key(ctx.checkpoint.digest),
                                      "layers": len(acts), "position": "last"}, sort_keys=True)}
        tensors = {f"layer{k}": a.to(torch.float16).contiguous() for k, a in enumerate(acts)}
        with atomic_path(ctx.artifact_dir(self.name) / ACTIVATIONS, durable=False) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return rows

    # -- run part: CKA from the stored activations ----------------------------------------
    def compute_run(self, run, store, members) -> list[dict]:
        root = Path(run.results_dir) / "artifacts" / self.name
        found, stale = self._stored(run, store, members, root)
        pairs_path = root / PAIRS
        known = {} if self.force else _read_pairs(pairs_path)
        cka = _PairCache(known, found)
        rows: list[dict] = []
        no_final = []
        for m in members:
            steps = sorted(s for (name, s) in found if name == m.name)
            if not steps:
                continue
            final = m.steps[-1]
            if (m.name, final) not in found:
                no_final.append(m.name)
            for i, s in enumerate(steps):
                if (m.name, final) in found:
                    rows += _layer_rows(m.name, s, "cka_final", cka((m.name, s), (m.name, final)))
                if i > 0:
                    rows += _layer_rows(m.name, s, "cka_previous", cka((m.name, s), (m.name, steps[i - 1])))
        for shape_members in _seed_groups(members).values():
            for m in shape_members:
                for s in sorted(s for (name, s) in found if name == m.name):
                    others = [o for o in shape_members if o is not m and (o.name, s) in found]
                    if others:
                        values = [cka((m.name, s), (o.name, s)) for o in others]
                        rows += _layer_rows(m.name, s, "cka_seeds", [sum(v) / len(v) for v in zip(*values)])
        if stale:
            warnings.warn(f"representations: checkpoints left out of CKA, their stored activations missing or computed "
                          f"for other weights or probe options than now (analyse these steps again, with --force if "
                          f"their files were deleted): {_listing(stale)}", stacklevel=2)
        if no_final:
            warnings.warn(f"representations: no cka_final for {', '.join(no_final)}: their last checkpoint was not "
                          "analysed (add it to --steps)", stacklevel=2)
        if cka.computed or len(cka.used) != len(known):
            root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(pairs_path, json.dumps({"format": "pythia-cka-pairs/1", "pairs": cka.used},
                                                     sort_keys=True) + "\n", durable=False)
        return rows

    def _stored(self, run, store, members, root: Path) -> tuple[dict, list]:
        """{(member, step): (identity, activations path)} of the activations that belong to the
        checkpoints as they are now and to these options; and the (member, step)s left out."""
        found, stale = {}, []
        for m in members:
            for s in m.steps:
                key = store.unit_key(self.name, m.name, s)
                if key is None:
                    continue
                path = root / m.name / f"step{s}" / ACTIVATIONS
                if key != self.cache_key(m.checkpoint(s).digest) or not path.is_file():
                    stale.append((m.name, s))
                    continue
                found[(m.name, s)] = (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20], path)
        return found, stale


class _PairCache:
    """Per-layer CKA of two stored checkpoints, from the pair store or computed from their Gram
    matrices (kept for the last `_GRAMS_KEPT` checkpoints)."""

    def __init__(self, known: dict, found: dict):
        self.known, self.found = known, found
        self.used: dict[str, list[float]] = {}
        self.grams: OrderedDict = OrderedDict()
        self.computed = 0

    def __call__(self, a: tuple, b: tuple) -> list[float]:
        ia, ib = self.found[a][0], self.found[b][0]
        key = ":".join(sorted((ia, ib)))
        if key not in self.used:
            value = self.known.get(key)
            if value is None:
                ga, gb = self._grams(a), self._grams(b)
                if len(ga) != len(gb):
                    raise ValueError(f"representations: {a[0]} step {a[1]} and {b[0]} step {b[1]} have different "
                                     "numbers of layers")
                value = [gram_cka(x, y) for x, y in zip(ga, gb)]
                self.computed += 1
            self.used[key] = value
        return self.used[key]

    def _grams(self, who: tuple) -> list:
        from safetensors.torch import load_file

        ident, path = self.found[who]
        if ident not in self.grams:
            tensors = load_file(str(path))
            self.grams[ident] = [gram(tensors[f"layer{k}"]) for k in range(len(tensors))]
            while len(self.grams) > _GRAMS_KEPT:
                self.grams.popitem(last=False)
        self.grams.move_to_end(ident)
        return self.grams[ident]


def _read_pairs(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent or unreadable: a cache, recomputed
    pairs = record.get("pairs") if isinstance(record, dict) else None
    return pairs if isinstance(pairs, dict) else {}


def _layer_rows(member: str, step: int, metric: str, values: list[float]) -> list[dict]:
    return [{"member": member, "step": step, "task": f"layer{k}", "metric": metric, "value": v}
            for k, v in enumerate(values) if v is not None and math.isfinite(v)]


def _seed_groups(members) -> dict[str, list]:
    groups: dict[str, list] = {}
    for m in members:
        if getattr(m, "base", None) is None:
            groups.setdefault(m.shape, []).append(m)
    return groups


def _listing(pairs: list[tuple]) -> str:
    by: dict[str, list] = {}
    for name, step in pairs:
        by.setdefault(name, []).append(step)
    return "; ".join(f"{name}: steps {', '.join(map(str, steps))}" for name, steps in by.items())
