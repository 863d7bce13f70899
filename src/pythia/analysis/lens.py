"""`lens`: what each layer already predicts, by the logit lens (nostalgebraist 2020) and, with
`--tuned`, a tuned lens trained for the checkpoint (Belrose et al. 2023); definitions in
`pythia.mechanisms.lens`.

Rows: task `layer{l}` (l = 0 the embeddings .. L the last block, whose lens is the model's own
output) with metrics `kl_to_final` (KL(p_L || p_l), nats, mean over the held-out positions) and
`ce` (the lens' cross-entropy of the true next token); `prediction_depth` (mean over positions
of the first layer from which the lens' top-1 token stays the model's). With `--tuned`, also
`tuned_kl_to_final` and `tuned_ce` for layers 0..L-1, the translators trained for
`--tuned-steps` Adam steps at `--tuned-lr` on the first `--tuned-windows` training positions of
the member's order, and saved as `tuned_lens.safetensors`.

Artifacts (`results/artifacts/lens/{member}/step{N}/`): `lens.tsv` (the table per layer),
`windows.json` (the held-out windows used), `tuned_lens.safetensors` with `--tuned`.
"""
from __future__ import annotations

from ..io import write_text_atomic
from ..run import RunError
from ._mechanisms import HELD_OUT_OPTIONS, check_held_out, held_out, held_out_pass, write_windows
from .base import Analysis, AnalysisError, Option, Row, register


@register
class Lens(Analysis):
    name = "lens"
    summary = "logit lens per layer (KL to the output, CE, prediction depth); --tuned adds a tuned lens"
    version = 1
    options = (
        *HELD_OUT_OPTIONS,
        Option("tuned", bool, False, "also train a tuned lens on this checkpoint (translators saved as safetensors)"),
        Option("tuned_steps", int, 250, "tuned lens: Adam steps"),
        Option("tuned_lr", float, 1e-3, "tuned lens: learning rate"),
        Option("tuned_windows", int, 32, "tuned lens: training windows (the first positions of the member's order)"),
        Option("tuned_rows", int, 512, "tuned lens: token positions per step"),
    )

    def cache_key(self, digest):
        """The tuned lens' options matter only with --tuned."""
        key = super().cache_key(digest)
        if not self.opts["tuned"]:
            key["options"] = {k: v for k, v in key["options"].items() if not k.startswith("tuned_")}
        return key

    def check(self, run, members) -> None:
        check_held_out(self.name, run, members, self.opts)
        if not self.opts["tuned"]:
            return
        for k in ("tuned_steps", "tuned_windows", "tuned_rows"):
            if self.opts[k] < 1:
                raise AnalysisError(f"lens: --{k.replace('_', '-')} must be >= 1, got {self.opts[k]}")
        for m in members:
            if not m.dataset:
                raise AnalysisError(f"lens --tuned trains on the member's training data, and {m.name} has none known "
                                    f"({run.source}: open a Hub repo with --data PREFIX, its preshuffled training "
                                    "data), or drop --tuned")

    def training_windows(self, ctx):
        key = ("lens.train", ctx.member.name, self.opts["tuned_windows"])
        if key not in ctx.shared:
            try:
                ctx.shared[key] = ctx.member.order().batch(0, self.opts["tuned_windows"])
            except (RunError, OSError, IndexError, ValueError) as exc:
                raise AnalysisError(f"lens --tuned: no training windows for {ctx.member.name}: {exc}") from None
        return ctx.shared[key]

    def compute(self, ctx) -> list[Row]:
        tuned = None
        if self.opts["tuned"]:
            from ..mechanisms.lens import held_out_sums, train_tuned_lens

            tuned = train_tuned_lens(ctx.model, self.training_windows(ctx), steps=self.opts["tuned_steps"],
                                     lr=self.opts["tuned_lr"], rows=self.opts["tuned_rows"],
                                     batch=self.opts["mech_batch"], device=ctx.device, autocast=ctx.autocast)
            windows, prefix = held_out(ctx, self.opts)
            sums = held_out_sums(ctx.model, windows, lens=True, tuned=tuned, batch=self.opts["mech_batch"],
                                 device=ctx.device, autocast=ctx.autocast)
        else:
            sums, windows, prefix = held_out_pass(ctx, self.opts, lens=True)
        n = sums.positions
        kl, ce = sums.kl / n, sums.ce / n
        folder = ctx.artifact_dir(self.name)
        rows = [Row("prediction_depth", sums.depth / n)]
        lines = ["layer\tkl_to_final\tce" + ("\ttuned_kl_to_final\ttuned_ce" if tuned is not None else "")]
        for l in range(len(kl)):
            rows += [Row("kl_to_final", float(kl[l]), task=f"layer{l}"), Row("ce", float(ce[l]), task=f"layer{l}")]
            cells = [str(l), repr(float(kl[l])), repr(float(ce[l]))]
            if tuned is not None and l < len(kl) - 1:
                tkl, tce = float(sums.tuned_kl[l] / n), float(sums.tuned_ce[l] / n)
                rows += [Row("tuned_kl_to_final", tkl, task=f"layer{l}"), Row("tuned_ce", tce, task=f"layer{l}")]
                cells += [repr(tkl), repr(tce)]
            lines.append("\t".join(cells))
        write_text_atomic(folder / "lens.tsv", "\n".join(lines) + "\n")
        write_windows(folder, prefix, windows)
        if tuned is not None:
            tuned.save(folder / "tuned_lens.safetensors", {
                "steps": self.opts["tuned_steps"], "lr": self.opts["tuned_lr"], "rows": self.opts["tuned_rows"],
                "training_windows": f"training positions 0..{self.opts['tuned_windows'] - 1} of {ctx.member.name}'s order",
                "layer": "translator l maps h_l to h_l + W h_l + b (l = 0: the embeddings)"})
        return rows
