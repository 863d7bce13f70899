"""The report's Representations section from synthetic rows in the shapes `representations` and
`optimizer_state` write: which figures, which matrices are chosen, what a curve holds, and notes
(never errors) when one of the analyses is missing."""
from __future__ import annotations

import math

from pythia.report.sections import ReportData, render_sections
from pythia.report.sections.representations import chosen_matrices, short_name

SIZES = {"small": 2, "large": 4}  # layers
SEEDS = (1, 2)
STEPS = (0, 1, 2, 4, 8, 16)


def _row(analysis, size, seed, step, task, metric, value):
    return {"suite": "synth", "member": f"{size}-seed{seed}", "size": size, "seed": seed, "step": step,
            "tokens": step * 64, "analysis": analysis, "task": task, "metric": metric, "value": value, "stderr": None}


def matrices(layers: int) -> list[str]:
    out = ["gpt_neox.embed_in.weight", "embed_out.weight"]
    for i in range(layers):
        out += [f"gpt_neox.layers.{i}.attention.query_key_value.weight", f"gpt_neox.layers.{i}.mlp.dense_4h_to_h.weight"]
    return out


def cka(layer: int, step: int) -> float:
    return 1.0 - 0.5 * math.exp(-step / (2.0 + layer))


def rows(with_optimizer: bool = True) -> list[dict]:
    out = []
    for size, layers in SIZES.items():
        for seed in SEEDS:
            for step in STEPS:
                for k in range(layers + 1):
                    out.append(_row("representations", size, seed, step, f"layer{k}", "cka_final", cka(k, step)))
                    out.append(_row("representations", size, seed, step, f"layer{k}", "cka_seeds", 0.9 * cka(k, step)))
                for name in matrices(layers):
                    for metric in ("per", "hoyer", "grad_per", "grad_hoyer", "condition", "gini", "grad_norm"):
                        out.append(_row("representations", size, seed, step, name, metric, 0.5 + 0.01 * step))
                if with_optimizer and step:
                    for name in matrices(layers) + ["all"]:
                        for metric in ("update_ratio", "grad_snr", "outlier_frac"):
                            out.append(_row("optimizer_state", size, seed, step, name, metric, 1e-3 * step))
    return out


def _section(table):
    secs = {s.key: s for s in render_sections(ReportData(table, "synth", tuple(SIZES)))}
    assert "analysis-representations" not in secs and "analysis-optimizer_state" not in secs
    return secs["representations"]


def test_the_section_draws_cka_chosen_matrices_and_the_optimizer_state():
    import plotly.graph_objects as go

    sec = _section(rows())
    assert sec.errors == [] and sec.notes == []
    titles = [f.title for f in sec.figures]
    assert any(t.startswith("CKA with the final checkpoint") for t in titles)
    assert any(t.startswith("CKA across seeds") for t in titles)
    assert not any(t.startswith("CKA with the previous") for t in titles)  # no such rows here
    for fig in sec.figures:
        go.Figure(data=fig.data, layout=fig.layout)  # plotly's schema
    final = next(f for f in sec.figures if f.title.startswith("CKA with the final checkpoint"))
    assert final.menu == [f"cka_final (layer{k})" for k in range(5)]  # both sizes' layers, one menu
    mean = next(t for t in final.data if t.get("name", "").startswith("large") and t.get("mode") == "lines")
    assert mean["y"] == [cka(0, s) for s in STEPS]  # layer0, mean over the two seeds (equal here)
    mats = next(f for f in sec.figures if f.title.startswith("Weights and probe gradients"))
    # the middle block of the shallower size (2 layers: block 1) and the two embeddings
    assert {label.split(" (")[1].rstrip(")") for label in mats.menu} == {
        "embed_in", "embed_out", "layers.1.attention.query_key_value", "layers.1.mlp.dense_4h_to_h"}
    assert {label.split(" (")[0] for label in mats.menu} == {"per", "hoyer", "grad_per", "grad_hoyer"}
    opt = [f for f in sec.figures if f.title.startswith("Optimizer state (mean over matrices)")]
    assert len(opt) == 3
    logs = {f.title.rsplit(": ", 1)[1]: f.layout["yaxis"].get("type") == "log" for f in opt}
    assert logs == {"grad_snr (all)": True, "outlier_frac (all)": False, "update_ratio (all)": True}
    assert any(f.title.startswith("Optimizer state per matrix") for f in sec.figures)


def test_missing_optimizer_state_is_a_note():
    sec = _section(rows(with_optimizer=False))
    assert sec.errors == []
    assert any("optimizer_state" in n for n in sec.notes)
    only_opt = [r for r in rows() if r["analysis"] == "optimizer_state"]
    sec = _section(only_opt)
    assert sec.errors == [] and any("representations" in n for n in sec.notes)


def test_chosen_matrices_and_short_names():
    table = [{"task": t, "size": "a"} for t in matrices(4)] + [{"task": t, "size": "b"} for t in matrices(6)]
    assert chosen_matrices(table) == {"gpt_neox.embed_in.weight", "embed_out.weight",
                                      "gpt_neox.layers.2.attention.query_key_value.weight",
                                      "gpt_neox.layers.2.mlp.dense_4h_to_h.weight"}
    assert short_name("gpt_neox.layers.2.mlp.dense_4h_to_h.weight") == "layers.2.mlp.dense_4h_to_h"
    assert chosen_matrices([{"task": "layer0"}]) == set()
