"""`pythia demo`: a whole Pythia-style study, end to end, on a laptop, with nothing to download.

corpus (Python's own standard library) -> BPE tokenizer -> GPT-NeoX .bin/.idx -> a suite
(sizes x seeds, one training order, Pythia's log-spaced checkpoint schedule scaled down)
-> validation loss at every checkpoint -> every study of the toolkit (studies.py) -> the report (HTML page,
results table, learning-curve plot). One member is
also forked half-way through training and trained on, from then on, batches in which every
" self" token is " this" (a data intervention, pythia.train.intervention: the Pythia paper's
pronoun swap, on code); a probe scores " self" against " this" after code contexts and the
report compares the fork with its base.

Every stage leaves its output complete or not at all (atomic writes) and skips itself when
its output is already there, and the trainer resumes members from their last checkpoint, so
re-running the same command after an interruption carries on where it stopped.

Output folder (`--out`):
    demo.json        the demo settings; a folder only ever holds one kind of demo
    corpus/          train.jsonl, valid.jsonl, manifest.json (Python version, sha256)
    data/            tokenizer.json, train.{bin,idx}, valid.{bin,idx} + manifests,
                     corpus.sha256 (the corpus they were built from)
    suite.yaml       the suite spec that was trained (`pythia train` accepts it as is)
    probe_self_this.txt  the code contexts of the fork's probe (pronoun_probe)
    tasks/, tasks-arithmetic/, terms.txt  the studies' lm-eval tasks and counted terms
    run/             the run: {member}/step{N}/ checkpoints, {member}/metrics.jsonl; the fork
                     {member}+this/ from its from_step on
    report/          index.html (the interactive report), results.csv, learning_curves.png, summary.txt,
                     compare_{fork}.png
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pythia.demo.corpus import CorpusSettings, build_corpus
from pythia.demo.studies import DemoStudies, run_studies
from pythia.io import write_json_atomic, write_text_atomic

DEMO_VERSION = 3  # tick when a change makes old demo folders unusable (2: the intervention fork, 3: the studies)


@dataclass(frozen=True)
class Size:
    """One model shape of the demo suite (GPT-NeoX, parallel residual, rotary 25%)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int


@dataclass(frozen=True)
class DemoIntervention:
    """The demo's data intervention: fork `member` at `from_step`, swap tokens from then on."""

    name: str
    member: str
    from_step: int
    token_map: tuple[tuple[str, str], ...]
    probe_words: str
    """pronoun_probe's two continuations (the map's source and target)."""


# " self" is the most frequent identifier of the corpus; " this" is rare in Python. Both are one
# token of the demo tokenizers (the spec check refuses the fork otherwise).
SELF_TO_THIS = ((" self", " this"),)
# Code contexts after which " self" is the natural next token (for pronoun_probe; \n = newline).
PROBE_CONTEXTS = (
    "        return", "        x =", "        if not", "        for item in", "        result =",
    "        elif", "        while", "        assert", "        if key in", "        value =",
    "    def close(self):\\n        if", "    def __repr__(self):\\n        return",
)


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
    optimizer_state_every: int = 1
    """train.optimizer_state_every: AdamW moments (2x the weights) on every k-th checkpoint and the last."""
    intervention: DemoIntervention | None = None
    studies: DemoStudies | None = None


# Full demo: three sizes (0.36M, 0.73M, 1.1M parameters) x four seeds, 256 steps of 16 x 128
# tokens (~0.5M tokens, a fifth of the corpus), checkpoints 0, 1, 2, 4, 8, then every 16 (21 in
# all; Pythia: ..., 512, then every 1000): enough seeds and checkpoints for a training map with
# several states and for outlier scores (4 seeds). Sized to finish, every study and the report
# included, within 8 minutes on 2 idle CPU cores (README.md and `pythia demo --help` quote
# pythia.cli.demo's FULL_DURATION / QUICK_DURATION); the studies' steps and options below keep
# it there (each study's share is in the demo's log).
FULL = DemoSettings(
    mode="full",
    corpus=CorpusSettings(),
    vocab_size=2048,
    sizes=(Size("d64-l2", 2, 64, 4), Size("d96-l3", 3, 96, 4), Size("d128-l3", 3, 128, 4)),
    seeds=(1, 2, 3, 4),
    seq_len=128,
    global_batch=16,
    train_iters=256,
    checkpoint_interval=16,
    lr=2e-3,
    min_lr=2e-4,
    optimizer_state_every=4,  # moments at steps 8, 64, 128 (the fork's start), 192, 256: half the disk
    intervention=DemoIntervention("this", "d96-l3-seed1", 128, SELF_TO_THIS, " self, this"),
    studies=DemoStudies(eval_steps="0,16,64,256", eval_limit=32,
                        memorization_steps="64,256", memorization_positions="0:1024",
                        memorization_cont_len=4,
                        arithmetic_steps="256", arithmetic_x2_max=5, arithmetic_seeds=(1,),
                        token_windows=16, convergence_steps="0,4,16,64,256", convergence_windows=16,
                        mechanism_steps="0,2,8,32,128,256",
                        representation_steps="0,16,64,128,256", probe_windows=16, probe_len=32),
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
    optimizer_state_every=5,  # moments at steps 10 (the fork's start) and 20
    intervention=DemoIntervention("this", "d64-l2-seed1", 10, SELF_TO_THIS, " self, this"),
    studies=DemoStudies(eval_steps="all", eval_limit=None, memorization_steps="all",
                        memorization_positions=None, memorization_cont_len=4, arithmetic_steps="10,20",
                        arithmetic_x2_max=5, arithmetic_seeds=(1,), probe_windows=32, probe_len=32),
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
    """The suite spec (the structure `pythia train` reads from YAML) for these settings, its
    paths under `out_dir` (`Path()`: relative to the spec file's folder, as OUT/suite.yaml has them)."""
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
            "optimizer_state_every": settings.optimizer_state_every,
        },
        "checkpoints": {"interval": settings.checkpoint_interval, "log_spaced": True},
        "eval": {"samples": settings.valid_samples},
        "interventions": [
            {"name": iv.name, "members": [iv.member], "from_step": iv.from_step,
             "token_map": [list(pair) for pair in iv.token_map]}
            for iv in ([settings.intervention] if settings.intervention else [])
        ],
    }


def fork_name(settings: DemoSettings) -> str | None:
    iv = settings.intervention
    return f"{iv.member}+{iv.name}" if iv else None


def run_probe(settings: DemoSettings, out_dir: Path, run_dir: Path) -> None:
    """pronoun_probe on the fork and its base from the fork's first step: does the fork come to
    prefer " this" where its base says " self"? (Cached: a re-run computes nothing.)"""
    from pythia.analysis.runner import run_analyses
    from pythia.run import open_run

    iv = settings.intervention
    contexts = out_dir / "probe_self_this.txt"
    write_text_atomic(contexts, "\n".join(PROBE_CONTEXTS) + "\n")  # one context per line, \\n = newline
    run_analyses(open_run(run_dir), "pronoun_probe", members=[iv.member, fork_name(settings)],
                 steps=f"{iv.from_step}:", device="cpu", progress=False,
                 options={"probe_words": iv.probe_words, "probe_templates": str(contexts)})


def run_demo(out_dir: str | Path | None = None, quick: bool = False, progress: bool = True,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run (or continue) the demo in `out_dir`; return where everything is."""
    import yaml

    from pythia.data.tokenize import read_manifest, tokenize_corpus
    from pythia.data.tokenizer import tokenizer_info, train_tokenizer
    from pythia.report import build_report
    from pythia.suite import train_suite
    from pythia.train.spec import SuiteSpec

    start = time.monotonic()
    settings = settings_for(quick)
    out_dir = Path(out_dir) if out_dir is not None else default_out(quick)
    _claim_folder(out_dir, settings)
    corpus_dir, data_dir = out_dir / "corpus", out_dir / "data"

    log(f"[1/6] corpus: Python's standard library -> {corpus_dir}")
    manifest = build_corpus(corpus_dir, settings.corpus)
    tr, va = manifest["splits"]["train"], manifest["splits"]["valid"]
    log(f"      Python {manifest['python_version']}: {tr['documents']} train / "
        f"{va['documents']} valid documents, {tr['characters'] + va['characters']:,} "
        f"characters, sha256 {manifest['sha256'][:16]}")

    _check_corpus_stamp(data_dir, manifest["sha256"])
    tok_path = data_dir / "tokenizer.json"
    if not tok_path.is_file():
        log(f"[2/6] tokenizer: byte-level BPE, vocab {settings.vocab_size} -> {tok_path}")
        train_tokenizer(corpus_dir / "train.jsonl", settings.vocab_size, tok_path)
    else:
        log(f"[2/6] tokenizer: {tok_path} (already trained)")
    tok = tokenizer_info(tok_path)

    for split in ("train", "valid"):
        prefix = data_dir / split
        m = read_manifest(prefix)
        if m is None:
            m = tokenize_corpus([corpus_dir / f"{split}.jsonl"], tok_path, prefix, workers=1,
                                progress=progress)
        log(f"[3/6] tokens: {split}: {m['documents']} documents, {m['tokens']:,} tokens "
            f"-> {prefix}.bin/.idx")

    spec_path = out_dir / "suite.yaml"  # its paths relative to its folder: `pythia train OUT/suite.yaml`
    write_text_atomic(spec_path, yaml.safe_dump(suite_spec(settings, Path(), tok), sort_keys=False))
    spec = SuiteSpec.from_yaml(spec_path)
    n_members = len(settings.sizes) * len(settings.seeds)
    log(f"[4/6] train: {len(settings.sizes)} sizes x {len(settings.seeds)} seeds = "
        f"{n_members} members, {settings.train_iters} steps of {settings.global_batch} x "
        f"{settings.seq_len} tokens -> {out_dir / 'run'}")
    iv = settings.intervention
    if iv is not None:
        log(f"      + fork {fork_name(settings)}: {iv.member} from step {iv.from_step}, every "
            + ", ".join(f"{a!r} -> {b!r}" for a, b in iv.token_map) + " in its batches from then on")
    train_suite(spec, progress=progress)
    run_dir = out_dir / "run"  # spelled like out_dir (train_suite returns it absolute)

    if settings.studies is not None:
        log(f"[5/6] studies: every analysis on the run -> {run_dir / 'results'}")
        run_studies(settings.studies, out_dir, run_dir, progress=progress, log=log)
    if iv is not None:
        log(f"      intervention: pronoun_probe on {iv.member} and its fork {fork_name(settings)}")
        run_probe(settings, out_dir, run_dir)
    log(f"[6/6] report -> {out_dir / 'report'}")
    report = build_report(run_dir, out_dir / "report")
    return DemoResult(out_dir=out_dir, corpus_manifest=manifest, run_dir=run_dir,
                      report=report, seconds=time.monotonic() - start,
                      final_step=settings.train_iters)


def describe(result: DemoResult) -> str:
    """The closing message: where everything is and the final losses."""
    from pythia.report import format_forks, format_summary
    from pythia.run import open_run

    rep = result.report
    view = open_run(result.run_dir)
    members = [m.name for m in view.members if m.base is None]
    forks = [m for m in view.members if m.base is not None]
    first = members[0] if members else "MEMBER"
    lines = [
        "",
        f"demo finished in {result.seconds:.0f} s; everything is under {result.out_dir}/",
        f"  corpus      {result.out_dir / 'corpus'}  (sha256 {result.corpus_manifest['sha256'][:16]})",
        f"  tokens      {result.out_dir / 'data'}",
        f"  suite spec  {result.out_dir / 'suite.yaml'}",
        f"  checkpoints {result.run_dir}/{{member}}/step{{N}}/  members: {', '.join(members)}",
        *[f"  fork        {result.run_dir / f.name}/  {f.base} from step {f.from_step}, trained on "
          f"transformed batches (data intervention)" for f in forks],
        f"  report      {rep.html}  (open it in a browser)",
        f"  table       {rep.table}",
        f"  plot        {rep.plot}",
        *[f"  comparison  {r['plot']}" for r in rep.forks],
        "",
        "final validation loss (mean over seeds):",
        format_summary(rep.summary),
        *format_forks(rep.forks, rep.val_metric),
        "",
        "next: load a checkpoint with",
        f"  python -c \"import pythia; m = pythia.load_model('{result.run_dir / first}', "
        f"revision='step{result.final_step}')\"",
    ]
    for f in forks:
        lines += [f"what the fork {f.name} was fed instead, and how it differs from its base:",
                  f"  pythia data batch --run {result.out_dir} --member {f.name} --step {f.from_step} --diff",
                  f"  pythia compare {result.out_dir} {f.base} {f.name}"]
    return "\n".join(lines)
