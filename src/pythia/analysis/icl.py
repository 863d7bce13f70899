"""`icl`: loss by position and the in-context learning score (Olsson et al. 2022, "In-context
Learning and Induction Heads", section 2).

L(k) = mean over the held-out windows of CE_k = -ln p(x_k | x_<k), k = 2..T (T = S + 1 tokens a
window; nothing predicts x_1: Pythia trains without BOS). ICL score = L(k_late) - L(k_early),
negative when later tokens are predicted better thanks to the context. Olsson's k_early = 50 and
k_late = 500; defaults that fit any context: min(50, T/10) and min(500, T-1), rounded down.

Rows: `icl_score`; `loss_at_position` with task = k for k in {2, 4, 8, ...} up to T, plus
k_early, k_late and T. Artifacts (`results/artifacts/icl/{member}/step{N}/`): `loss_by_position.tsv`
(every k) and `windows.json` (the held-out dataset and the indices of its windows used).
"""
from __future__ import annotations

from ..io import write_text_atomic
from ._mechanisms import HELD_OUT_OPTIONS, check_held_out, held_out_pass, write_windows
from .base import Analysis, AnalysisError, Option, Row, register

OLSSON_EARLY, OLSSON_LATE = 50, 500


def default_positions(T: int) -> tuple[int, int]:
    """(k_early, k_late) for windows of T tokens: min(50, T/10), min(500, T-1), rounded down."""
    return max(2, min(OLSSON_EARLY, T // 10)), min(OLSSON_LATE, T - 1)


def row_positions(T: int, early: int, late: int) -> list[int]:
    """Positions with a `loss_at_position` row: powers of two from 2, k_early, k_late and T."""
    ks = {early, late, T}
    k = 2
    while k <= T:
        ks.add(k)
        k *= 2
    return sorted(ks)


@register
class ICL(Analysis):
    name = "icl"
    summary = "loss by token position on held-out windows and the in-context learning score L(late) - L(early)"
    version = 1
    options = (
        Option("icl_early", int, None, "early position k (default min(50, T/10), T = tokens per window)"),
        Option("icl_late", int, None, "late position k (default min(500, T-1))"),
        *HELD_OUT_OPTIONS,
    )

    def positions(self, seq_len: int) -> tuple[int, int]:
        T = seq_len + 1
        early, late = default_positions(T)
        early = self.opts["icl_early"] or early
        late = self.opts["icl_late"] or late
        for flag, k in (("--icl-early", early), ("--icl-late", late)):
            if not 2 <= k <= T:
                raise AnalysisError(f"icl: {flag} {k} is outside the run's context: positions are k = 2..{T} "
                                    f"(windows of T = seq_len + 1 = {T} tokens; nothing predicts token 1)")
        if early >= late:
            raise AnalysisError(f"icl: --icl-early ({early}) must be before --icl-late ({late})")
        return early, late

    def check(self, run, members) -> None:
        check_held_out(self.name, run, members, self.opts)
        for m in members:
            self.positions(m.seq_len)

    def compute(self, ctx) -> list[Row]:
        sums, windows, prefix = held_out_pass(ctx, self.opts, lens=False)
        T = windows.shape[1]
        early, late = self.positions(T - 1)
        loss = sums.ce_by_position / sums.windows  # index i: k = i + 2
        folder = ctx.artifact_dir(self.name)
        write_text_atomic(folder / "loss_by_position.tsv", "position\tloss\n" + "".join(
            f"{i + 2}\t{v!r}\n" for i, v in enumerate(loss.tolist())))
        write_windows(folder, prefix, windows)
        rows = [Row("icl_score", float(loss[late - 2] - loss[early - 2]))]
        rows += [Row("loss_at_position", float(loss[k - 2]), task=str(k)) for k in row_positions(T, early, late)]
        return rows
