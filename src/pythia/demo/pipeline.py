"""`pythia demo`: a whole Pythia-style study, end to end, on a laptop, with nothing to download.

corpus (Python's own standard library) -> BPE tokenizer -> GPT-NeoX .bin/.idx -> a suite
(sizes x seeds, one training order, Pythia's log-spaced checkpoint schedule scaled down)
-> validation loss at every checkpoint -> the report (HTML page, results table, learning-curve plot).

Every stage leaves its output complete or not at all (atomic writes) and skips itself when
its output is already there, and the trainer resumes members from their last checkpoint, so
re-running the same command after an interruption carries on where it stopped.

Output folder (`--out`):
    demo.json        the demo settings; a folder only ever holds one kind of demo
    corpus/          train.jsonl, valid.jsonl, manifest.json (Python version, sha256)
    data/            tokenizer.json, train.{bin,idx}, valid.{bin,idx} + manifests,
                     corpus.sha256 (the corpus they were built from)
    suite.yaml       the suite spec that was trained (`pythia train` accepts it as is)
    run/             the run: {member}/step{N}/ checkpoints, {member}/metrics.jsonl
    report/          index.html (the interactive report), results.csv, learning_curves.png, summary.txt
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pythia.demo.corpus import CorpusSettings, build_corpus
from pythia.io import write_json_atomic, write_text_atomic

DEMO_VERSION = 1  # tick when a change makes old demo folders unusable


@dataclass(frozen=True)
class Size:
    """One model shape of the demo suite (GPT-NeoX, parallel residual, rotary 25%)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides what the demo trains; recorded in OUT/demo.json."""

    mode: str
    corpus: CorpusSettings
    vocab_size: int
    sizes: tuple[Size, ...]
    seeds: tuple[int, ...]
    seq_len: int
    global_batch: int
    train_iters: int
    checkpoint_interval: int  # Pythia: 1000 of 143,000; log-spaced 1, 2, 4, ... below it
    lr: float
    min_lr: float
    data_seed: int = 1234  # Pythia's training-order seed
    valid_samples: int = 64  # validation sequences scored at every checkpoint


# Full demo: three sizes (0.36M, 1.1M, 2.6M parameters) x two seeds, 256 steps of 16 x 128
# tokens (~0.5M tokens, a fifth of the corpus), checkpoints 0, 1, 2, 4, ..., 32, then every
# 32 (Pythia: ..., 512, then every 1000). Sized to finish in about 3.5 minutes on 2 idle CPU
# cores (the bound is 10; README.md and `pythia demo --help` quote pythia.cli.demo's
# FULL_DURATION / QUICK_DURATION).
FULL = DemoSettings(
    mode="full",
    corpus=CorpusSettings(),
    vocab_size=2048,
    sizes=(Size("d64-l2", 2, 64, 4), Size("d128-l3", 3, 128, 4), Size("d192-l4", 4, 192, 4)),
    seeds=(1, 2),
    seq_len=128,
    global_batch=16,
    train_iters=256,
    checkpoint_interval=32,
    lr=2e-3,
    min_lr=2e-4,
)
# Quick demo (what the tests run): micro models, 20 steps, a ~1.5 MB corpus: under a minute.
QUICK = DemoSettings(
    mode="quick",
    corpus=CorpusSettings(max_bytes=1_500_000),
    vocab_size=1024,
    sizes=(Size("d32-l2", 2, 32, 4), Size("d64-l2", 2, 64, 4)),
    seeds=(1, 2),
    seq_len=64,
    global_batch=8,
    train_iters=20,
    checkpoint_interval=10,
    lr=2e-3,
    min_lr=2e-4,
    valid_samples=16,
)


@dataclass
class DemoResult:
    out_dir: Path
    corpus_manifest: dict
    run_dir: Path
    report: object  # pythia.report.Report
    seconds: float
    final_step: int


def settings_for(quick: bool) -> DemoSettings:
    return QUICK if quick else FULL


def default_out(quick: bool) -> Path:
    return Path("demo-output-quick" if quick else "demo-output")


def _settings_record(settings: DemoSettings) -> dict:
    return {"demo_version": DEMO_VERSION, **json.loads(json.dumps(dataclasses.asdict(settings)))}


def _claim_folder(out_dir: Path, settings: DemoSettings) -> None:
    """Record the settings in OUT/demo.json, or refuse a folder made with other settings."""
    path = out_dir / "demo.json"
    record = _settings_record(settings)
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); use a fresh --out") from exc
        if existing != record:
            raise ValueError(
                f"{out_dir} holds a demo made with other settings (mode "
                f"{existing.get('mode')!r}, see {path}); choose another --out or delete it")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not a demo folder; choose another --out")
    write_json_atomic(path, record)


def _check_corpus_stamp(data_dir: Path, corpus_sha: str) -> None:
    """Tokens must come from this corpus: refuse data built from another (another Python)."""
    stamp = data_dir / "corpus.sha256"
    if stamp.is_file():
        old = stamp.read_text(encoding="utf-8").strip()
        if old != corpus_sha:
            raise ValueError(f"{data_dir} was built from another corpus (sha256 {old[:16]}, now "
                             f"{corpus_sha[:16]}: another Python?); choose another --out")
    else:
        write_text_atomic(stamp, corpus_sha + "\n")


def suite_spec(settings: DemoSettings, out_dir: Path, tokenizer_info: dict) -> dict:
    """The suite spec (the structure `pythia train` reads from YAML) for these settings."""
    data_dir = out_dir / "data"
    return {
        "name": f"demo-{settings.mode}",
        "output": str(out_dir / "run"),
        "data": {
            "train": str(data_dir / "train"),
            "valid": str(data_dir / "valid"),
            "seq_len": settings.seq_len,
            "seed": settings.data_seed,
        },
        "members": [
            {"name": s.name, "num_layers": s.num_layers, "hidden_size": s.hidden_size,
             "num_heads": s.num_heads, "vocab_size": tokenizer_info["padded_vocab_size"]}
            for s in settings.sizes
        ],
        "seeds": list(settings.seeds),
        "train": {
            "iters": settings.train_iters,
            "global_batch": settings.global_batch,
            "lr": settings.lr,
            "min_lr": settings.min_lr,
            "precision": "fp32",
            "device": "cpu",
        },
        "checkpoints": {"interval": settings.checkpoint_interval, "log_spaced": True},
        "eval": {"samples": settings.valid_samples},
    }


def run_demo(out_dir: str | Path | None = None, quick: bool = False, progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run (or continue) the demo in `out_dir`; return where everything is."""
    import yaml

    from pythia.data.tokenize import read_manifest, tokenize_corpus
    from pythia.data.tokenizer import tokenizer_info, train_tokenizer
    from pythia.report import build_report
    from pythia.train.spec import SuiteSpec
    from pythia.train.suite import train_suite

    start = time.monotonic()
    settings = settings_for(quick)
    out_dir = Path(out_dir) if out_dir is not None else default_out(quick)
    _claim_folder(out_dir, settings)
    corpus_dir, data_dir = out_dir / "corpus", out_dir / "data"

    log(f"[1/5] corpus: Python's standard library -> {corpus_dir}")
    manifest = build_corpus(corpus_dir, settings.corpus)
    tr, va = manifest["splits"]["train"], manifest["splits"]["valid"]
    log(f"      Python {manifest['python_version']}: {tr['documents']} train / "
        f"{va['documents']} valid documents, {tr['characters'] + va['characters']:,} "
        f"characters, sha256 {manifest['sha256'][:16]}")

    _check_corpus_stamp(data_dir, manifest["sha256"])
    tok_path = data_dir / "tokenizer.json"
    if not tok_path.is_file():
        log(f"[2/5] tokenizer: byte-level BPE, vocab {settings.vocab_size} -> {tok_path}")
        train_tokenizer(corpus_dir / "train.jsonl", settings.vocab_size, tok_path)
    else:
        log(f"[2/5] tokenizer: {tok_path} (already trained)")
    tok = tokenizer_info(tok_path)

    for split in ("train", "valid"):
        prefix = data_dir / split
        m = read_manifest(prefix)
        if m is None:
            m = tokenize_corpus([corpus_dir / f"{split}.jsonl"], tok_path, prefix, workers=1,
                                progress=progress)
        log(f"[3/5] tokens: {split}: {m['documents']} documents, {m['tokens']:,} tokens "
            f"-> {prefix}.bin/.idx")

    spec_dict = suite_spec(settings, out_dir, tok)
    spec_path = out_dir / "suite.yaml"
    write_text_atomic(spec_path, yaml.safe_dump(spec_dict, sort_keys=False))
    spec = SuiteSpec.from_dict(spec_dict)
    n_members = len(settings.sizes) * len(settings.seeds)
    log(f"[4/5] train: {len(settings.sizes)} sizes x {len(settings.seeds)} seeds = "
        f"{n_members} members, {settings.train_iters} steps of {settings.global_batch} x "
        f"{settings.seq_len} tokens -> {out_dir / 'run'}")
    run_dir = Path(train_suite(spec, progress=progress))

    log(f"[5/5] report -> {out_dir / 'report'}")
    report = build_report(run_dir, out_dir / "report")
    return DemoResult(out_dir=out_dir, corpus_manifest=manifest, run_dir=run_dir,
                      report=report, seconds=time.monotonic() - start,
                      final_step=settings.train_iters)


def describe(result: DemoResult) -> str:
    """The closing message: where everything is and the final losses."""
    from pythia.report import format_summary
    from pythia.run import open_run

    rep = result.report
    members = [m.name for m in open_run(result.run_dir).members]
    first = members[0] if members else "MEMBER"
    lines = [
        "",
        f"demo finished in {result.seconds:.0f} s; everything is under {result.out_dir}/",
        f"  corpus      {result.out_dir / 'corpus'}  (sha256 {result.corpus_manifest['sha256'][:16]})",
        f"  tokens      {result.out_dir / 'data'}",
        f"  suite spec  {result.out_dir / 'suite.yaml'}",
        f"  checkpoints {result.run_dir}/{{member}}/step{{N}}/  members: {', '.join(members)}",
        f"  report      {rep.html}  (open it in a browser)",
        f"  table       {rep.table}",
        f"  plot        {rep.plot}",
        "",
        "final validation loss (mean over seeds):",
        format_summary(rep.summary),
        "",
        "next: load a checkpoint with",
        f"  python -c \"import pythia; m = pythia.load_model('{result.run_dir / first}', "
        f"revision='step{result.final_step}')\"",
    ]
    return "\n".join(lines)
