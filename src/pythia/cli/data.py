"""`pythia data ...`: tokenizers, tokenized datasets, GPT-NeoX's training order, batches,
provenance, preshuffled export and shards. Each subcommand calls one pythia.data function."""
from __future__ import annotations

import argparse
import json
import sys

_FMT = argparse.RawDescriptionHelpFormatter


def _add(sub, name: str, help_: str, description: str, examples: str, func):
    p = sub.add_parser(name, help=help_, description=description, formatter_class=_FMT,
                       epilog="examples:\n" + examples)
    p.set_defaults(func=func)
    return p


def _steps(text: str) -> tuple[int, int]:
    a, _, b = text.partition(":")
    try:
        a, b = int(a), int(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps wants A:B (end exclusive), got {text!r}") from None
    if b <= a:
        raise argparse.ArgumentTypeError(f"--steps {text!r} is empty: A:B needs B > A (end exclusive)")
    return a, b


def _order_args(p, batch_required: bool = False, preshuffled: bool = False, run: bool = False) -> None:
    if run:
        g = p.add_argument_group("from a run (reads everything below from the run's spec)")
        g.add_argument("--run", metavar="RUN", help="a run folder or demo output: dataset, seq-len, seed, iterations "
                       "and batch size are the member's own (a member with its own data seed has its own order)")
        g.add_argument("--member", metavar="M", help="member of --run (needed when the run has several data seeds)")
    g = p.add_argument_group("training order (GPT-NeoX train_0 parameters)")
    g.add_argument("--seq-len", type=int, help="sequence length S (samples have S+1 tokens)")
    g.add_argument("--seed", type=int, default=1234, help="data seed (default: 1234, Pythia's)")
    g.add_argument("--num-samples", type=int, help="samples requested N (cache name's {N}ns)")
    g.add_argument("--train-iters", type=int,
                   help="instead of --num-samples: N = ceil(train_iters x batch_size x 1.005)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="global batch size B (positions per optimizer step)" + ("" if batch_required else
                                                                               "; required without --run"))
    g.add_argument("--name", default="train_0", help="dataset name in the cache file names (default train_0)")
    g.add_argument("--out-dir", help="folder of the cached *_idx.npy files (default: beside PREFIX)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    if preshuffled:
        g.add_argument("--preshuffled", action="store_true",
                       help="PREFIX is a preshuffled file (item k = position k): no order parameters")


def _run_member(args):
    """The member --run/--member name (None without --run); fills args from its spec."""
    if not getattr(args, "run", None):
        if getattr(args, "member", None):
            raise ValueError("--member needs --run")
        if getattr(args, "prefix", None) is None:
            raise ValueError("give a dataset PREFIX, or --run RUN [--member M]")
        return None
    from pythia.run import open_run

    view = open_run(args.run)
    if args.member or view.focus_member:
        member = view.member(args.member)
    else:
        seeds = {m.data_seed for m in view.members}
        if len(seeds) > 1:
            raise ValueError(f"{args.run}: members read {len(seeds)} different orders (data seeds {sorted(seeds)}); "
                             f"pass --member, one of: {', '.join(m.name for m in view.members)}")
        member = view.members[0]
    given = [f for f in ("seq_len", "num_samples", "train_iters", "batch_size") if getattr(args, f, None) is not None]
    if given or getattr(args, "prefix", None):
        raise ValueError(f"--run reads the dataset and order parameters from the run; drop "
                         f"{', '.join(['PREFIX'] * bool(getattr(args, 'prefix', None)) + ['--' + f.replace('_', '-') for f in given])}")
    args.prefix, args.batch_size = member.dataset, member.global_batch
    return member


def _order(args, member=None):
    from pythia.data.order import PreshuffledOrder, TrainingOrder, num_samples_for

    if member is not None:
        return member.order(progress=not args.no_progress)
    if getattr(args, "preshuffled", False):
        return PreshuffledOrder(args.prefix)
    if args.seq_len is None:
        raise ValueError("--seq-len is required (or --run RUN, or --preshuffled for a preshuffled file)")
    n = args.num_samples
    if n is None:
        if args.train_iters is None or args.batch_size is None:
            raise ValueError("give --batch-size with --train-iters (or --num-samples): the order depends on them "
                             "(or use --run RUN to read them from a run)")
        n = num_samples_for(args.train_iters, args.batch_size)
    return TrainingOrder.build(args.prefix, args.seq_len, args.seed, n, name=args.name,
                               out_dir=args.out_dir, progress=not args.no_progress,
                               rebuild=getattr(args, "rebuild", False))


def _need_batch_size(args) -> int:
    if args.batch_size is None:
        raise ValueError("--batch-size is required (the global batch the run trained with), or use --run RUN")
    return args.batch_size


def _train_tokenizer(args) -> int:
    from pathlib import Path

    from pythia.data.tokenizer import padded_vocab_size, train_tokenizer

    tok = train_tokenizer([Path(p) for p in args.inputs], args.vocab_size, args.out, min_frequency=args.min_frequency,
                          text_field=args.text_field)
    n = tok.get_vocab_size()
    print(f"wrote {args.out}: {n} tokens (padded vocab {padded_vocab_size(n)}); "
          "<|endoftext|>=0, <|padding|>=1")
    return 0


def _tokenize(args) -> int:
    from pythia.data.tokenize import tokenize_corpus

    m = tokenize_corpus(args.inputs, args.tokenizer, args.out, text_field=args.text_field,
                        workers=args.workers, skip_bad=args.skip_bad, progress=not args.no_progress)
    print(f"wrote {args.out}.bin/.idx: {m['documents']} documents, {m['tokens']} tokens, {m['dtype']}")
    if m["skipped"]:
        print(f"skipped: {m['skipped']}")
    ignored = m["ignored_in_folders"]
    if ignored["files"]:
        print(f"ignored {ignored['files']} file(s) in the folders without a corpus suffix (e.g. "
              f"{', '.join(ignored['examples'][:3])}); name a file explicitly to read it as text")
    return 0


def _index(args) -> int:
    order = _order(args)
    if order.build_log is not None:
        print(order.build_log.summary())
    print(f"{order.stem}_{{doc,sample,shuffle}}_idx.npy: epochs {order.num_epochs}, "
          f"tokens/epoch {order.tokens_per_epoch}, built samples {order.shuffle_idx.shape[0]}, "
          f"usable positions {order.num_positions}")
    return 0


def _decode_path(args) -> str:
    if args.tokenizer:
        return args.tokenizer
    from pythia.data.tokenize import dataset_tokenizer

    path = dataset_tokenizer(args.prefix)
    if path is not None:
        return str(path)
    raise ValueError("--decode needs --tokenizer (PREFIX.manifest.json names no tokenizer file that still exists)")


def _save_batches(path: str, order, steps: range, batch_size: int, stacked: bool) -> tuple:
    """Stream the batches of `steps` into one .npy (header first, then each batch's bytes):
    memory holds one batch, whatever the range. Written under a temporary name, then renamed."""
    import numpy as np
    from tqdm.auto import tqdm

    from pythia.io import atomic_path

    first = order.batch(steps.start, batch_size)  # (B, S+1)
    shape = (len(steps), *first.shape) if stacked else first.shape
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<i8")), "fortran_order": False, "shape": shape}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        bar = tqdm(steps, unit="step", desc="batches", disable=len(steps) < 2 or not sys.stderr.isatty())
        for n in bar:
            block = first if n == steps.start else order.batch(n, batch_size)
            f.write(np.ascontiguousarray(block, dtype="<i8").tobytes())
    return shape


def _batch(args) -> int:
    member = _run_member(args)
    order = _order(args, member)
    bsz = _need_batch_size(args)
    a, b = args.steps if args.steps else (args.step, args.step + 1)
    if member is not None and member.train_iters is not None and b > member.train_iters:
        print(f"note: {member.name} trained {member.train_iters} steps; steps >= {member.train_iters} were never "
              "trained on", file=sys.stderr)
    if args.check:
        return _check_fingerprints(member, order, range(a, b), bsz)
    if args.diff:
        return _print_diff(member, order, range(a, b), bsz, args)
    if args.out:
        shape = _save_batches(args.out, order, range(a, b), bsz, stacked=bool(args.steps))
        print(f"wrote {args.out}: shape {shape} int64")
        if not args.decode:
            return 0
    tok = None
    if args.decode:
        from pythia.data.tokenizer import load_tokenizer

        tok = load_tokenizer(_decode_path(args))
    for s in range(a, b):  # one batch in memory at a time
        for r, row in enumerate(order.batch(s, bsz)):
            k = s * bsz + r
            body = tok.decode(row.tolist(), skip_special_tokens=False) if tok else " ".join(map(str, row.tolist()))
            print(f"=== step {s} row {r} (position {k}) ===\n{body}")
    return 0


def _check_fingerprints(member, order, steps: range, batch_size: int) -> int:
    """Compare batches with the fingerprints the member's metrics.jsonl recorded (exit 1 on mismatch)."""
    from pythia.train.metrics import batch_fingerprint

    if member is None:
        raise ValueError("--check compares with a run's metrics.jsonl: give --run RUN [--member M]")
    logged = {r["step"]: r.get("batch_fp") for r in member.metrics() if isinstance(r.get("step"), int)}
    if member.base is not None:  # a fork's batches before its from_step are its base's (trained by the base)
        base = {r["step"]: r.get("batch_fp") for r in member.run.member(member.base).metrics()
                if isinstance(r.get("step"), int) and r["step"] <= member.from_step}
        logged = {**base, **logged}
    bad = 0
    for n in steps:
        block = order.batch(n, batch_size)
        want = logged.get(n + 1)  # metrics line `step` counts updates: update n+1 read batch n
        got = batch_fingerprint(block)
        if want is None:
            print(f"step {n}: no fingerprint in {member.path / 'metrics.jsonl'} (not trained yet?)")
            bad += 1
        elif want == got:
            print(f"step {n}: match ({got})")
        else:
            print(f"step {n}: MISMATCH: rebuilt batch {got}, run recorded {want}")
            bad += 1
    return 1 if bad else 0


def _print_diff(member, order, steps: range, batch_size: int, args) -> int:
    """What a fork's intervention changed in each batch: (row, column) base token -> fork token."""
    from pythia.train.intervention import batch_diff

    if member is None or member.base is None:
        forks = [m.name for m in member.run.members if m.base] if member is not None else []
        raise ValueError("--diff shows what a fork's intervention changed: give --run RUN --member FORK"
                         + (f" (forks: {', '.join(forks)})" if forks else " (this run has no forks: see "
                            "`interventions:` in docs/training.md)"))
    tok = None
    if args.decode or member.tokenizer_path is not None:
        from pythia.data.tokenizer import load_tokenizer

        tok = load_tokenizer(_decode_path(args) if args.decode else member.tokenizer_path)
    show = (lambda i: f"{i} {tok.decode([i])!r}") if tok is not None else str
    print(f"{member.name}: {order.transform.describe()} on the batches of {member.base} from step {member.from_step}")
    for s in steps:
        changes = batch_diff(order, s, batch_size)
        note = " (before from_step: the base's batch, unchanged)" if s < member.from_step else ""
        print(f"=== step {s}: {len(changes)} tokens changed{note} ===")
        for r, c, old, new in changes:
            print(f"  row {r} (position {s * batch_size + r}) token {c}: {show(old)} -> {show(new)}")
        if args.decode:
            for r, row in enumerate(order.batch(s, batch_size)):
                print(f"--- step {s} row {r} as the fork read it ---\n{tok.decode(row.tolist(), skip_special_tokens=False)}")
    return 0


def _where(args) -> int:
    member = _run_member(args)
    order = _order(args, member)
    if args.position is not None:
        rows = order.locate(args.position)
    else:
        rows = order.find_document(args.document, batch_size=_need_batch_size(args))
        iters = member.train_iters if member is not None else args.train_iters
        for r in rows:
            r["trained"] = iters is None or r["step"] < iters
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if args.position is not None:
        bsz = args.batch_size
        where = f"step {args.position // bsz}, row {args.position % bsz}" if bsz else "give --batch-size for its step"
        print(f"position {args.position} ({where}) = sample {rows[0]['sample'] if rows else '?'}:")
        for r in rows:
            src = r["source"] or {}
            print(f"  tokens [{r['sample_offset']}, {r['sample_offset'] + r['doc_end'] - r['doc_start']}) "
                  f"<- document {r['document']} tokens [{r['doc_start']}, {r['doc_end']})  "
                  f"{src.get('file', '')}:{src.get('location', '')} {json.dumps(src.get('fields', {}))}")
    else:
        trained = [r for r in rows if r["trained"]]
        print(f"document {args.document}: trained on at {len(trained)} positions"
              + (f" ({len(rows) - len(trained)} more in the order after the last trained step)" if len(rows) > len(trained) else ""))
        for r in rows:
            mark = "" if r["trained"] else "  [after the run's last step: not trained on]"
            print(f"  step {r['step']} row {r['row']} (position {r['position']}, copy {r['copy']}): "
                  f"document tokens [{r['doc_start']}, {r['doc_end']}) at sample offset {r['sample_offset']}{mark}")
    return 0


def _preshuffle(args) -> int:
    from pythia.data.preshuffle import export_preshuffled

    order = _order(args)
    n = args.num_positions
    if n is None and args.export_steps is not None:
        n = args.export_steps * _need_batch_size(args)
    info = export_preshuffled(order, args.out, num_positions=n, progress=not args.no_progress)
    print(f"wrote {args.out}.bin/.idx: {info['items']} items of {info['width']} tokens ({info['dtype']})")
    return 0


def _shard(args) -> int:
    from pythia.data.shards import shard

    m = shard(args.bin, args.out_dir, args.num_shards, progress=not args.no_progress)
    print(f"wrote {len(m['shards'])} shards of {m['name']} ({m['bytes']} bytes) to {args.out_dir}")
    return 0


def _verify(args) -> int:
    from pythia.data.shards import verify

    m = verify(args.manifest)
    print(f"ok: {len(m['shards'])} shards of {m['name']}, {m['bytes']} bytes")
    return 0


def _unshard(args) -> int:
    from pythia.data.shards import unshard

    path = unshard(args.manifest, args.out, progress=not args.no_progress)
    print(f"wrote {path} (sha256 verified)")
    return 0


def _info(args) -> int:
    from pythia.data.indexed import IndexedDataset

    ds = IndexedDataset(args.prefix)
    print(f"{ds.prefix}: {len(ds)} items, {ds.num_tokens} tokens, {ds.dtype}, "
          f"doc_idx {len(ds.doc_idx)} entries")
    return 0


def register(sub) -> None:
    """Add `pythia data` and its nested subcommands."""
    data = sub.add_parser(
        "data", help="tokenizers, tokenized datasets, GPT-NeoX training order, batches, provenance",
        description="Tokenize corpora into GPT-NeoX .bin/.idx datasets, rebuild GPT-NeoX v1.0's exact "
                    "training order (doc/sample/shuffle_idx .npy, same names and values), view any "
                    "step's batch, trace tokens back to documents, export preshuffled files, shard.",
        formatter_class=_FMT,
        epilog="examples:\n"
               "  pythia data tokenize corpus.jsonl.zst --tokenizer 20B_tokenizer.json --out data/pile\n"
               "  pythia data index data/pile --seq-len 2048 --seed 1234 --train-iters 143000 --batch-size 1024\n"
               "  pythia data batch data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --step 0\n"
               "run `pythia data COMMAND --help` for each command.")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = _add(dsub, "train-tokenizer", "train a byte-level BPE tokenizer (GPT-NeoX conventions)",
             "Train a byte-level BPE on corpus files with <|endoftext|>=0 and <|padding|>=1, NFC "
             "normalization and no prefix space (as GPT-NeoX-20B's tokenizer); writes tokenizer.json.",
             "  pythia data train-tokenizer corpus/ --vocab-size 512 --out tok.json\n", _train_tokenizer)
    p.add_argument("inputs", nargs="+", help="corpus files or folders (.jsonl[.zst|.gz], .parquet, text: .txt, .md, "
                   ".py, ...)")
    p.add_argument("--vocab-size", type=int, required=True, help="target vocabulary size (>= 258)")
    p.add_argument("--out", required=True, help="output tokenizer.json path")
    p.add_argument("--text-field", default="text", help="JSON/Parquet text field (default text)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count to merge (default 2)")

    p = _add(dsub, "tokenize", "corpus -> PREFIX.bin/.idx (+ manifest, metadata sidecar)",
             "Tokenize every document (appending <|endoftext|>) in parallel into a GPT-NeoX mmap "
             "dataset: uint16 below 65,500 tokens of vocab, int32 above. Writes PREFIX.manifest.json "
             "(hashes, counts, tokenizer, inputs) and PREFIX.meta.jsonl (per-document source metadata).",
             "  pythia data tokenize pile/00.jsonl.zst --tokenizer 20B_tokenizer.json --out data/pile00\n"
             "  pythia data tokenize books/ --tokenizer tok.json --out data/books --skip-bad\n", _tokenize)
    p.add_argument("inputs", nargs="+", help="corpus files or folders; folders are searched for .jsonl[.zst|.gz], "
                   ".json, .parquet and text files (.txt, .md, .py, ...; one document per file), never for "
                   "tokenize's own outputs")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json (or a folder holding it)")
    p.add_argument("--out", required=True, help="output PREFIX (writes PREFIX.bin, PREFIX.idx, ...)")
    p.add_argument("--text-field", default="text", help="JSON/Parquet text field (default text)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default 1: one process whose encode_batch "
                   "uses every core; N > 1: N single-threaded processes)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip bad records (invalid JSON, missing text, non-UTF-8, empty) and count them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(dsub, "index", "build/load GPT-NeoX's doc/sample/shuffle_idx for a dataset",
             "Build GPT-NeoX v1.0's three index arrays (or load them if cached), saved as "
             "{PREFIX}_{name}_indexmap_{N}ns_{S}sl_{seed}s_{doc,sample,shuffle}_idx.npy plus an "
             "_order.json sidecar that detects caches built from other data.",
             "  pythia data index data/pile --seq-len 2048 --seed 1234 --train-iters 143000 --batch-size 1024\n"
             "  pythia data index data/tiny --seq-len 64 --seed 1 --num-samples 5000 --out-dir cache/\n", _index)
    p.add_argument("prefix", help="dataset PREFIX (PREFIX.bin/.idx)")
    _order_args(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if a cache exists (e.g. a stale one)")

    p = _add(dsub, "batch", "tokens of a training step (B, S+1), constant time in the step",
             "Show or save the tokens of optimizer step n: training positions [B*n, B*(n+1)). Works on "
             "our datasets (with the order's parameters) and on preshuffled files (--preshuffled).",
             "  pythia data batch --run demo-output --member d64-l2-seed1 --step 100 --decode\n"
             "  pythia data batch --run demo-output --steps 0:10 --check   # vs the run's logged fingerprints\n"
             "  pythia data batch --run demo-output --member d64-l2-seed1+this --step 150 --diff   # a fork's changes\n"
             "  pythia data batch data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --step 142999 --out b.npy\n"
             "  pythia data batch pile-preshuffled/document --preshuffled --batch-size 1024 --steps 0:2 --decode\n", _batch)
    p.add_argument("prefix", nargs="?", help="dataset PREFIX (or --run RUN)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--step", type=int, help="0-based optimizer step")
    g.add_argument("--steps", type=_steps, help="steps A:B (end exclusive); --out saves them as one (B-A, batch, S+1) array, "
                   "streamed batch by batch (memory holds one batch)")
    p.add_argument("--decode", action="store_true", help="print the text (tokenizer from --tokenizer or the manifest)")
    p.add_argument("--tokenizer", help="tokenizer.json for --decode")
    p.add_argument("--out", help="save the int64 tokens as .npy")
    p.add_argument("--check", action="store_true", help="with --run: compare each batch with the fingerprint the "
                   "run logged in metrics.jsonl; prints match/MISMATCH, exit 1 on a mismatch")
    p.add_argument("--diff", action="store_true", help="with --run --member FORK: list every token the fork's "
                   "intervention changed (row, column, base token -> fork token); with --decode also the text")
    _order_args(p, preshuffled=True, run=True)

    p = _add(dsub, "where", "provenance: position -> documents, or document -> steps",
             "With --position k: the documents, token ranges and source metadata that make up training "
             "position k. With --document d: every step, row and offset at which document d's tokens "
             "were trained on (a document can appear once per epoch copy).",
             "  pythia data where --run demo-output --document 1225\n"
             "  pythia data where data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --position 12345\n"
             "  pythia data where data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --document 42 --json\n", _where)
    p.add_argument("prefix", nargs="?", help="dataset PREFIX (or --run RUN)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--position", type=int, help="training position k")
    g.add_argument("--document", type=int, help="document (item) id d")
    p.add_argument("--json", action="store_true", help="print JSON records (with --document: `trained` is false "
                   "for positions after the run's last step)")
    _order_args(p, run=True)

    p = _add(dsub, "preshuffle", "export the order as a preshuffled dataset (item k = position k)",
             "Write the training order out as EleutherAI's preshuffled layout: one item of S+1 tokens "
             "per training position, in training order.",
             "  pythia data preshuffle data/pile --seq-len 2048 --train-iters 143000 --out out/document\n", _preshuffle)
    p.add_argument("prefix", help="dataset PREFIX")
    p.add_argument("--out", required=True, help="output PREFIX")
    p.add_argument("--num-positions", type=int, help="positions to export (default: all usable)")
    p.add_argument("--export-steps", type=int, help="instead: export this many steps x batch size")
    _order_args(p)

    p = _add(dsub, "shard", "split a .bin into {name}-{i:05d}-of-{n-1:05d}.bin shards",
             "Split a large .bin into Pythia-Hub-named shards with a sha256 manifest ({name}.shards.json); "
             "the .idx is copied beside them.",
             "  pythia data shard out/document.bin --num-shards 20 --out-dir shards/\n", _shard)
    p.add_argument("bin", help="the .bin file (or PREFIX)")
    p.add_argument("--num-shards", type=int, required=True, help="number of shards")
    p.add_argument("--out-dir", required=True, help="folder for the shards and manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(dsub, "verify", "check shards against their sha256 manifest",
             "Check every shard's size and sha256; the error names the first bad shard.",
             "  pythia data verify shards/\n", _verify)
    p.add_argument("manifest", help="shard folder or its *.shards.json")

    p = _add(dsub, "unshard", "rejoin shards into PREFIX.bin (streaming, hash-checked)",
             "Concatenate shards in order with bounded memory, checking each shard's and the whole "
             "file's sha256; nothing is left under the output name if a check fails.",
             "  pythia data unshard shards/ --out data/document\n", _unshard)
    p.add_argument("manifest", help="shard folder or its *.shards.json")
    p.add_argument("--out", required=True, help="output PREFIX (writes PREFIX.bin and PREFIX.idx)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _add(dsub, "info", "summary of a .bin/.idx dataset", "Items, tokens and dtype of a dataset.",
             "  pythia data info data/pile\n", _info)
    p.add_argument("prefix", help="dataset PREFIX")

    register_counts(dsub)


# ---------------------------------------------------------------------------------------------
# n-gram counts over the training order (pythia.data.ngram, pythia.data.counts)


def _parse_ids(text: str) -> list[int]:
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

    from pythia.data.counts import TermCounter
    from pythia.data.ngram import open_index
    from pythia.data.stepindex import human, order_record, prebuild_step_index, step_index_dir
    from pythia.run import open_run

    if args.prefix is not None:
        raise ValueError("with --run give no PREFIX: the members' training data is indexed")
    run = open_run(args.run)
    done = {}
    for m in run.select([args.member] if args.member else None):
        if m.dataset:  # the index first (with --shard-tokens) when absent
            open_index(m.dataset, args.index, build=True, progress=not args.no_progress,
                       shard_tokens=args.shard_tokens)
        counter = TermCounter.for_member(m, index_dir=args.index, build=True, progress=not args.no_progress,
                                         step_index=False)
        path = step_index_dir(counter.index, order_record(counter.index, counter.order, counter.batch_size))
        if path in done:
            print(f"{m.name}: shares {path} with {done[path]}")
            continue
        done[path] = m.name
        got = prebuild_step_index(counter.index, counter.order, counter.batch_size, lambda: counter.map,
                                  rebuild=args.rebuild, progress=not args.no_progress,
                                  max_bytes=math.inf if args.step_index_max is None else args.step_index_max)
        if got["built"]:
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


def register_counts(dsub) -> None:
    """`pythia data count`, `count-index` and `arithmetic-tasks` (kept apart to ease merging)."""
    from pythia.data.ngram import SHARD_TOKENS

    p = _add(dsub, "count", "n-gram counts in what a run member trained on by step k (or in a whole dataset)",
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
    p.add_argument("--tokens", type=_parse_ids, help="token ids to count instead of TEXT, e.g. 510,285")
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

    p = _add(dsub, "count-index", "build the suffix-array index (and a run's step sidecars) `pythia data count` uses",
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

    p = _add(dsub, "arithmetic-tasks", "write the term-frequency study's arithmetic tasks for lm-eval",
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
