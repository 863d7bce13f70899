"""`pythia data ...`: tokenizers, tokenized datasets, GPT-NeoX's training order, batches,
provenance, preshuffled export and shards. Argument parsing and printing only: each subcommand
calls the pythia.data (or pythia.verify) function that does the work. The n-gram counts
commands are in counts.py."""
from __future__ import annotations

import argparse
import json
import sys

from .commands import FMT, add_command
from .counts import register as register_counts


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

    from pythia.config import padded_vocab_size
    from pythia.data.tokenizer import train_tokenizer

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
        from pythia.data.batches import save_batches

        shape = save_batches(args.out, order, range(a, b), bsz, stacked=bool(args.steps))
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
    from pythia.verify import check_batch_fingerprints

    if member is None:
        raise ValueError("--check compares with a run's metrics.jsonl: give --run RUN [--member M]")
    bad = 0
    for n, got, want in check_batch_fingerprints(member, order, steps, batch_size):
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
    from pythia.data.provenance import find_document, locate

    if args.position is not None:
        rows = locate(order, args.position)
    else:
        rows = find_document(order, args.document, batch_size=_need_batch_size(args))
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
        formatter_class=FMT,
        epilog="examples:\n"
               "  pythia data tokenize corpus.jsonl.zst --tokenizer 20B_tokenizer.json --out data/pile\n"
               "  pythia data index data/pile --seq-len 2048 --seed 1234 --train-iters 143000 --batch-size 1024\n"
               "  pythia data batch data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --step 0\n"
               "run `pythia data COMMAND --help` for each command.")
    dsub = data.add_subparsers(dest="data_command", metavar="COMMAND")
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    p = add_command(dsub, "train-tokenizer", "train a byte-level BPE tokenizer (GPT-NeoX conventions)",
             "Train a byte-level BPE on corpus files with <|endoftext|>=0 and <|padding|>=1, NFC "
             "normalization and no prefix space (as GPT-NeoX-20B's tokenizer); writes tokenizer.json.",
             "  pythia data train-tokenizer corpus/ --vocab-size 512 --out tok.json\n", _train_tokenizer)
    p.add_argument("inputs", nargs="+", help="corpus files or folders (.jsonl[.zst|.gz], .parquet, text: .txt, .md, "
                   ".py, ...)")
    p.add_argument("--vocab-size", type=int, required=True, help="target vocabulary size (>= 258)")
    p.add_argument("--out", required=True, help="output tokenizer.json path")
    p.add_argument("--text-field", default="text", help="JSON/Parquet text field (default text)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count to merge (default 2)")

    p = add_command(dsub, "tokenize", "corpus -> PREFIX.bin/.idx (+ manifest, metadata sidecar)",
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

    p = add_command(dsub, "index", "build/load GPT-NeoX's doc/sample/shuffle_idx for a dataset",
             "Build GPT-NeoX v1.0's three index arrays (or load them if cached), saved as "
             "{PREFIX}_{name}_indexmap_{N}ns_{S}sl_{seed}s_{doc,sample,shuffle}_idx.npy plus an "
             "_order.json sidecar that detects caches built from other data.",
             "  pythia data index data/pile --seq-len 2048 --seed 1234 --train-iters 143000 --batch-size 1024\n"
             "  pythia data index data/tiny --seq-len 64 --seed 1 --num-samples 5000 --out-dir cache/\n", _index)
    p.add_argument("prefix", help="dataset PREFIX (PREFIX.bin/.idx)")
    _order_args(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if a cache exists (e.g. a stale one)")

    p = add_command(dsub, "batch", "tokens of a training step (B, S+1), constant time in the step",
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

    p = add_command(dsub, "where", "provenance: position -> documents, or document -> steps",
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

    p = add_command(dsub, "preshuffle", "export the order as a preshuffled dataset (item k = position k)",
             "Write the training order out as EleutherAI's preshuffled layout: one item of S+1 tokens "
             "per training position, in training order.",
             "  pythia data preshuffle data/pile --seq-len 2048 --train-iters 143000 --out out/document\n", _preshuffle)
    p.add_argument("prefix", help="dataset PREFIX")
    p.add_argument("--out", required=True, help="output PREFIX")
    p.add_argument("--num-positions", type=int, help="positions to export (default: all usable)")
    p.add_argument("--export-steps", type=int, help="instead: export this many steps x batch size")
    _order_args(p)

    p = add_command(dsub, "shard", "split a .bin into {name}-{i:05d}-of-{n-1:05d}.bin shards",
             "Split a large .bin into Pythia-Hub-named shards with a sha256 manifest ({name}.shards.json); "
             "the .idx is copied beside them.",
             "  pythia data shard out/document.bin --num-shards 20 --out-dir shards/\n", _shard)
    p.add_argument("bin", help="the .bin file (or PREFIX)")
    p.add_argument("--num-shards", type=int, required=True, help="number of shards")
    p.add_argument("--out-dir", required=True, help="folder for the shards and manifest")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add_command(dsub, "verify", "check shards against their sha256 manifest",
             "Check every shard's size and sha256; the error names the first bad shard.",
             "  pythia data verify shards/\n", _verify)
    p.add_argument("manifest", help="shard folder or its *.shards.json")

    p = add_command(dsub, "unshard", "rejoin shards into PREFIX.bin (streaming, hash-checked)",
             "Concatenate shards in order with bounded memory, checking each shard's and the whole "
             "file's sha256; nothing is left under the output name if a check fails.",
             "  pythia data unshard shards/ --out data/document\n", _unshard)
    p.add_argument("manifest", help="shard folder or its *.shards.json")
    p.add_argument("--out", required=True, help="output PREFIX (writes PREFIX.bin and PREFIX.idx)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add_command(dsub, "info", "summary of a .bin/.idx dataset", "Items, tokens and dtype of a dataset.",
             "  pythia data info data/pile\n", _info)
    p.add_argument("prefix", help="dataset PREFIX")

    register_counts(dsub)
