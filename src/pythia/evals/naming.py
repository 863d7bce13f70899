"""How benchmark results are named in the results table, for our runs and imported files alike.

- task: the lm-eval task name, with the number of shots when it is not zero:
  "arc_easy" (zero-shot), "arc_easy@5shot" (five-shot), so both live side by side.
- metric: lm-eval 0.4 keys "metric,filter" lose the default filter ("acc,none" -> "acc") and
  keep any other ("exact_match,strict-match"); the old harness' (0.3, Pythia's evals) names
  are mapped to 0.4's ("ppl" -> "perplexity"); "<metric>_stderr" is the stderr column.
"""
from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["METRIC_ALIASES", "is_number", "metric_name", "parse_task_label", "result_rows", "task_label"]

METRIC_ALIASES = {"ppl": "perplexity"}
"""Old lm-eval (0.3) metric names -> 0.4 names (lambada's `ppl` became `perplexity`)."""

_NOT_METRICS = {"alias", "name", "sample_len", "samples", "sample_count", "group", "task"}


def task_label(task: str, shots: int | None) -> str:
    return f"{task}@{shots}shot" if shots else task


def parse_task_label(label: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.+)@(\d+)shot", label)
    return (m[1], int(m[2])) if m else (label, 0)


def metric_name(key: str) -> str:
    """"acc,none" -> "acc"; "exact_match,first_word" kept; "ppl" -> "perplexity"."""
    base, _, flt = key.partition(",")
    base = METRIC_ALIASES.get(base, base)
    return base if flt in ("", "none") else f"{base},{flt}"


def is_number(value: Any) -> bool:
    try:
        return not isinstance(value, (bool, str)) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def result_rows(task: str, shots: int | None, metrics: dict) -> list[dict]:
    """One lm-eval result entry {"acc,none": v, "acc_stderr,none": se, ...} (0.4) or
    {"acc": v, "acc_stderr": se} (0.3) -> rows {task, metric, value, stderr}; entries that are
    not numbers (aliases, "N/A" stderrs) are dropped or give stderr None."""
    rows = []
    for key, value in metrics.items():
        base = key.partition(",")[0]
        if base in _NOT_METRICS or base.endswith("_stderr") or not is_number(value):
            continue
        se_key = key.replace(",", "_stderr,", 1) if "," in key else f"{key}_stderr"
        se = metrics.get(se_key)
        rows.append({"task": task_label(task, shots), "metric": metric_name(key), "value": float(value),
                     "stderr": float(se) if is_number(se) else None})
    return rows
