"""`pythia models`: the Pythia size table with exact parameter counts (no weights allocated)."""
from __future__ import annotations

import argparse
import json

_EPILOG = """\
examples:
  pythia models                 # table: shape, padded vocab, lr, precision, init, param counts
  pythia models --json          # the same as JSON (full configs incl. training recipes)
  pythia models --name 70m      # one size (also pythia-70m-deduped, EleutherAI/pythia-70m)

Counts are the closed form L(12d^2+13d) + 2d (+ 2Vd untied embeddings) and equal the
published numbers of every Hub model card.
"""


def models_table(names: list[str] | None = None) -> list[dict]:
    """One dict per size: the full config plus total / non-embedding parameter counts."""
    from ..config import PYTHIA_SIZES, model_config

    configs = [model_config(n) for n in names] if names else list(PYTHIA_SIZES.values())
    rows = []
    for c in configs:
        row = c.to_dict()
        row.update(params=c.num_params(), non_embedding_params=c.num_params(non_embedding=True),
                   head_dim=c.head_dim, rotary_dims=c.rotary_dims)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'name':<13}{'L':>3}{'d':>6}{'H':>4}{'dh':>5}{'V':>7}{'lr':>9}{'prec':>6}  {'init':<24}{'params':>16}{'non-embedding':>16}"
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["training"]
        init = f"{r['init_method']}/{r['output_init_method']}"
        lines.append(
            f"{r['name']:<13}{r['num_layers']:>3}{r['hidden_size']:>6}{r['num_heads']:>4}{r['head_dim']:>5}"
            f"{r['vocab_size']:>7}{t['lr']:>9.2e}{t['precision']:>6}  {init:<24}"
            f"{r['params']:>16,}{r['non_embedding_params']:>16,}"
        )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    rows = models_table(args.name)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def register(sub) -> None:
    """Add `pythia models`."""
    p = sub.add_parser(
        "models",
        help="list Pythia model sizes with exact parameter counts",
        description="Print the Pythia suite (14m .. 12b): shapes, padded vocab, training recipe, "
        "init and exact total / non-embedding parameter counts, computed without allocating weights.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    p.add_argument("--name", action="append", metavar="SIZE", help="only this size (repeatable), e.g. 70m")
    p.set_defaults(func=_run)
