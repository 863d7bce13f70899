"""`pythia data count`, `count-index` and `arithmetic-tasks`: n-gram counts over what a run's
members trained on (pythia.data.ngram, pythia.data.counts) and the term-frequency study's tasks.
Argument parsing and printing; the work is pythia.data.counts' and pythia.analysis'."""
from __future__ import annotations

import argparse
import json

from .commands import add_command


def parse_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tokens wants integer ids separated by commas or spaces, "
                                         f"got {text!r}") from None


def _count_target(args):
    """(run or None, dataset prefix or None, query text or None) from the positionals."""
    pos = list(args.positionals)
    want_text = args.tokens is None and args.terms is None
    if args.run:
        if len(pos) != int(want_text):
            raise ValueError("with --run give the TEXT to count (or --tokens IDS / --terms FILE), nothing else"
                             if want_text else "--tokens/--terms replace TEXT: give no positional argument with --run")
        from pythia.run import open_run

        return open_run(args.run), None, (pos[0] if pos else None)
    if args.member:
        raise ValueError("--member needs --run")
    if len(pos) != 1 + int(want_text):
        raise ValueError("give PREFIX TEXT (or PREFIX with --tokens IDS / --terms FILE), or --run RUN TEXT")
    return None, pos[0], (pos[1] if len(pos) > 1 else None)


def _counter(args, member, prefix):
    from pythia.data.counts import TermCounter

    progress = not args.no_progress
    if member is not None:
        return TermCounter.for_member(member, index_dir=args.index, build=True, progress=progress,
                                      tokenizer=args.tokenizer, step_index=not args.no_step_index,
                                      step_index_max=args.step_index_max)
    return TermCounter.for_prefix(prefix, index_dir=args.index, build=True, progress=progress,
                                  tokenizer=args.tokenizer)


def _count(args) -> int:
    run, prefix, text = _count_target(args)
    if args.terms is not None:
        return _count_terms(args, run, prefix)
    member = run.member(args.member) if run is not None else None
    counter = _counter(args, member, prefix)
    ids = counter.encode(text) if text is not None else args.tokens
    tc = counter.count(ids, until_step=args.until_step, documents=args.documents,
                       max_documents=args.max_documents, text=text)
    tc.extra = {"dataset": counter.index.dataset.prefix} | ({"member": member.name} if member else {})
    by_steps = member.steps if (args.by_step and member is not None) else None
    if args.json:
        print(json.dumps(tc.to_json(by_steps), indent=1))
        return 0
    _print_count(tc, member, by_steps)
    return 0


def _print_count(tc, member, by_steps) -> None:
    what = repr(tc.text) + " = " if tc.text is not None else ""
    print(f"{what}tokens {tc.tokens}")
    if member is None:
        print(f"  {tc.corpus_count} occurrences in {tc.extra['dataset']} (inside documents)")
    else:
        first = "never seen" if tc.first_step is None else f"first at step {tc.first_step}"
        print(f"  {member.name}: {tc.count} occurrences in updates 0..{tc.until_step - 1} ({first}; every epoch "
              f"counts); {tc.corpus_count} in the dataset {tc.extra['dataset']}")
    if by_steps is not None:
        seen = "  ".join(f"step{r['step']}={r['count']}" for r in tc.by_step(by_steps))
        print("  seen by checkpoint: " + (seen or "(no checkpoints)"))
    for r in tc.documents or []:
        src = r.get("source") or {}
        seen = f", trained {r['trained']}x, first at step {r['first_step']}" if "trained" in r else ""
        print(f"  document {r['document']}: {r['occurrences']} occurrence(s){seen}  "
              f"{src.get('file', '')}:{src.get('location', '')} {json.dumps(src.get('fields', {}))}")
    if tc.documents is not None and tc.documents_total > len(tc.documents):
        print(f"  ... {tc.documents_total - len(tc.documents)} more documents (--max-documents)")


def _count_terms(args, run, prefix) -> int:
    if run is None:
        from pythia.analysis.term_counts import read_terms

        counter = _counter(args, None, prefix)
        rows = [{"text": t, "tokens": (ids := counter.encode(t)), "count": counter.count(ids).corpus_count}
                for t in read_terms(args.terms)]
        print(json.dumps(rows, indent=1) if args.json else "\n".join(f"{r['count']:>12}  {r['text']!r}" for r in rows))
        return 0
    from pythia.analysis.runner import run_analyses

    members = [args.member] if args.member else None
    options = {"terms": args.terms, "ngram_index": args.index}
    summary = run_analyses(run, "term_counts", members=members, options=options, progress=not args.no_progress)
    rows = run.results().rows(analysis="term_counts", member=[m.name for m in run.select(members)])
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        last = {(r["member"], r["task"]): r for r in rows}  # rows are sorted by step: the last one wins
        for (name, term), r in sorted(last.items()):
            print(f"{name}  step{r['step']}  {int(r['value']):>12}  {term!r}")
        print(f"wrote {len(rows)} rows (analysis term_counts) to {run.results_dir}")
    return 0 if summary.ok else 1


def _count_index(args) -> int:
    from pathlib import Path

    from pythia.data.ngram import NgramIndex, build_index, default_index_dir

    if args.run:
        return _count_index_run(args)
    if args.prefix is None or args.member or args.step_index_max is not None:
        raise ValueError("give PREFIX (the dataset to index), or --run RUN [--member M] (its step sidecar too); "
                         "--member and --step-index-max go with --run")
    target = args.index or default_index_dir(args.prefix)

    if (Path(target) / "manifest.json").is_file() and not args.rebuild:
        index = NgramIndex(args.prefix, target)  # raises StaleIndexError when the dataset changed
        print(f"{target}: up to date ({len(index.shards)} shard(s)); --rebuild to build it again")
        return 0
    index = build_index(args.prefix, target, shard_tokens=args.shard_tokens, progress=not args.no_progress)
    size = sum((index.dir / s["file"]).stat().st_size for s in index.manifest["shards"])
    print(f"wrote {index.dir}: {len(index.shards)} shard(s), {index.dataset.num_tokens} tokens, {size} bytes")
    return 0


def _count_index_run(args) -> int:
    """The suffix-array index of each member's training data (built when absent) and the step
    sidecar of each member's order (members sharing an order share one)."""
    import math

    from pythia.data.counts import prebuild_member_index
    from pythia.data.stepindex import human
    from pythia.run import open_run

    if args.prefix is not None:
        raise ValueError("with --run give no PREFIX: the members' training data is indexed")
    run = open_run(args.run)
    done: dict = {}
    for m in run.select([args.member] if args.member else None):
        got = prebuild_member_index(m, args.index, shard_tokens=args.shard_tokens, rebuild=args.rebuild,
                                    max_bytes=math.inf if args.step_index_max is None else args.step_index_max,
                                    progress=not args.no_progress, done=done)
        path = got["path"]
        if got.get("shared_with"):
            print(f"{m.name}: shares {path} with {got['shared_with']}")
        elif got["built"]:
            print(f"{m.name}: wrote {path}: {human(got['bytes'])} ({got['bytes']} bytes; estimated at most "
                  f"{human(got['estimate'])}) in {got['seconds']:.1f} s")
        else:
            print(f"{m.name}: {path}: up to date ({human(got['bytes'])}); --rebuild to build it again")
    return 0


def _size_arg(text: str) -> float:
    from pythia.data.stepindex import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _arithmetic_tasks(args) -> int:
    from pythia.analysis.term_frequency import TASK_PREFIX, write_arithmetic_tasks

    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    names = write_arithmetic_tasks(args.out, ops, x2_max=args.x2_max)
    print(f"wrote {len(names)} lm-eval tasks to {args.out}; tags: " + ", ".join(f"{TASK_PREFIX}_{o}" for o in ops))
    return 0


def register(dsub) -> None:
    """`pythia data count`, `count-index` and `arithmetic-tasks` under `pythia data`."""
    from pythia.data.ngram import SHARD_TOKENS

    p = add_command(dsub, "count", "n-gram counts in what a run member trained on by step k (or in a whole dataset)",
             "Count the occurrences of a text (its tokens, exactly: no space is prepended) or of token ids in\n"
             "the training data a run member had seen by step k, or (without --run) in a whole dataset.\n\n"
             "What counts: an occurrence inside a document, once per epoch copy, at the step of the training\n"
             "sample whose input positions (the first S of its S+1 tokens) hold its first token, if the whole\n"
             "n-gram fits in that sample. Step n is the update reading positions [B n, B (n+1)); --until-step k\n"
             "counts updates 0..k-1, what checkpoint step{k} had seen (default: every trained step).\n\n"
             "The suffix-array index is stored beside the dataset (PREFIX.sa/), built on first use, and\n"
             "refused when the dataset changed since; with --run, a step sidecar for the member's order\n"
             "(PREFIX.sa/steps-*/, ~3 bytes per token and epoch + 1) is built there on the first count and\n"
             "rebuilt when the order or batch size changed: queries then read a slice of it. It is built\n"
             "unasked only when its estimated size is within --step-index-max (default $PYTHIA_STEP_INDEX_MAX,\n"
             "else 16GiB, and never beyond the free disk space less a margin); a larger one is skipped with a\n"
             "warning (same answers, slower): build it ahead with `pythia data count-index --run RUN`.\n\n"
             "--terms FILE counts one term per line (verbatim); with --run the counts go to the run's\n"
             "results table (analysis term_counts: task = the term, metric count, one row per checkpoint step).",
             "  pythia data count --run demo-output/run --member d64-l2-seed1 ' return' --by-step\n"
             "  pythia data count --run demo-output/run --member d64-l2-seed1 --tokens 510,285 --until-step 100 --json\n"
             "  pythia data count --run demo-output/run --terms terms.txt\n"
             "  pythia data count demo-output/data/train 'def __init__' --documents\n", _count)
    p.add_argument("positionals", nargs="*", metavar="[PREFIX] TEXT",
                   help="with --run: TEXT; without: PREFIX then TEXT (TEXT is tokenized exactly, no space added)")
    p.add_argument("--run", help="run folder, demo output, member folder or Hub repo id (see `pythia analyze`)")
    p.add_argument("--member", help="member of the run (default: the only or focused one)")
    p.add_argument("--tokens", type=parse_ids, help="token ids to count instead of TEXT, e.g. 510,285")
    p.add_argument("--terms", help="file of terms, one per line (verbatim), counted at every checkpoint step")
    p.add_argument("--until-step", type=int, help="count updates 0..k-1 (default: all trained steps)")
    p.add_argument("--by-step", action="store_true", help="also the cumulative count at each checkpoint step")
    p.add_argument("--documents", action="store_true", help="list the documents holding it, with source metadata")
    p.add_argument("--max-documents", type=int, default=20, help="documents listed at most (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON: count, first_step, tokens, ...")
    p.add_argument("--index", help="n-gram index folder (default PREFIX.sa beside the dataset)")
    p.add_argument("--tokenizer", help="tokenizer.json for TEXT (default: the dataset's, else the member's)")
    p.add_argument("--no-step-index", action="store_true",
                   help="count from the suffix array alone, without building the order's step sidecar "
                        "(no extra disk; same answers, slower)")
    p.add_argument("--step-index-max", type=_size_arg, metavar="SIZE",
                   help="build the step sidecar on this count only if it is estimated to take at most SIZE "
                        "(e.g. 64GiB, inf; default $PYTHIA_STEP_INDEX_MAX, else 16GiB; never beyond the free disk)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add_command(dsub, "count-index", "build the suffix-array index (and a run's step sidecars) `pythia data count` uses",
             "Build (once) the suffix-array index of PREFIX.bin into PREFIX.sa/: one suffix array per shard of\n"
             "at most --shard-tokens tokens (cut at document boundaries; 4 bytes per token on disk, the tokens\n"
             "are read from PREFIX.bin) and a manifest with which queries refuse a dataset changed since.\n\n"
             "With --run RUN [--member M] instead of PREFIX: the index of each member's training data (built\n"
             "when absent) and the step sidecar of each member's order (PREFIX.sa/steps-*/), whatever its size\n"
             "(unless --step-index-max) as long as the disk holds it: the one-off cost `pythia data count`\n"
             "would otherwise pay on its first count, or skip when over its limit. Prints size and time.",
             "  pythia data count-index demo-output/data/train\n"
             "  pythia data count-index data/pile --shard-tokens 500000000 --index /fast/pile.sa\n"
             "  pythia data count-index --run demo-output/run --member d64-l2-seed1\n", _count_index)
    p.add_argument("prefix", nargs="?", help="dataset PREFIX (not with --run)")
    p.add_argument("--run", help="build the step sidecar of this run's members' orders (and their data's index)")
    p.add_argument("--member", help="with --run: only this member (default: the focused one, else all)")
    p.add_argument("--step-index-max", type=_size_arg, metavar="SIZE",
                   help="with --run: refuse a sidecar estimated above SIZE (default: no limit but the free disk)")
    p.add_argument("--index", help="index folder (default PREFIX.sa)")
    p.add_argument("--shard-tokens", type=int, default=SHARD_TOKENS,
                   help=f"tokens per shard (default {SHARD_TOKENS}; ~14 bytes of memory per token to build)")
    p.add_argument("--rebuild", action="store_true",
                   help="build again even if an index exists (e.g. a stale one); with --run: the step sidecars")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add_command(dsub, "arithmetic-tasks", "write the term-frequency study's arithmetic tasks for lm-eval",
             "Write the Pythia term-frequency study's tasks (x1 in 0..99, x2 in 1..50, \"Q:What is {x1} plus\n"
             "{x2}? A:\" and \"times\") as lm-eval 0.4 YAML + JSON-lines files: one task per x1 and operation,\n"
             "few-shot examples from the other x1, greedy generation scored by exact match of the first number.",
             "  pythia data arithmetic-tasks --out tasks/arithmetic\n"
             "  pythia analyze demo-output/run eval --include-path tasks/arithmetic --tasks num_reasoning_arithmetic_addition\n"
             "  pythia analyze demo-output/run term_frequency\n", _arithmetic_tasks)
    p.add_argument("--out", required=True, help="output folder (created; replaced if it holds generated tasks)")
    p.add_argument("--ops", default="addition,multiplication", help="operations (default addition,multiplication)")
    p.add_argument("--x2-max", type=int, default=50, metavar="N",
                   help="items x2 = 1..N per task (default 50, the study's; fewer load and run faster)")
