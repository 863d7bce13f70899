"""`pythia data ...`: tokenizers, tokenized datasets, GPT-NeoX's training order, batches,
provenance, preshuffled export and shards. Each subcommand calls one pythia.data function."""
from __future__ import annotations

import argparse
import json

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


def _order_args(p, batch_required: bool = False, preshuffled: bool = False) -> None:
    g = p.add_argument_group("training order (GPT-NeoX train_0 parameters)")
    g.add_argument("--seq-len", type=int, help="sequence length S (samples have S+1 tokens)")
    g.add_argument("--seed", type=int, default=1234, help="data seed (default: 1234, Pythia's)")
    g.add_argument("--num-samples", type=int, help="samples requested N (cache name's {N}ns)")
    g.add_argument("--train-iters", type=int,
                   help="instead of --num-samples: N = ceil(train_iters x batch_size x 1.005)")
    g.add_argument("--batch-size", type=int, required=batch_required, default=None if batch_required else 1024,
                   help="global batch size B (positions per optimizer step)"
                   + ("" if batch_required else "; default 1024"))
    g.add_argument("--name", default="train_0", help="dataset name in the cache file names (default train_0)")
    g.add_argument("--out-dir", help="folder of the cached *_idx.npy files (default: beside PREFIX)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    if preshuffled:
        g.add_argument("--preshuffled", action="store_true",
                       help="PREFIX is a preshuffled file (item k = position k): no order parameters")


def _order(args):
    from pythia.data.order import PreshuffledOrder, TrainingOrder, num_samples_for

    if getattr(args, "preshuffled", False):
        return PreshuffledOrder(args.prefix)
    if args.seq_len is None:
        raise ValueError("--seq-len is required (or --preshuffled for a preshuffled file)")
    n = args.num_samples
    if n is None:
        if args.train_iters is None or args.batch_size is None:
            raise ValueError("give --num-samples, or --train-iters with --batch-size")
        n = num_samples_for(args.train_iters, args.batch_size)
    return TrainingOrder.build(args.prefix, args.seq_len, args.seed, n, name=args.name,
                               out_dir=args.out_dir, progress=not args.no_progress,
                               rebuild=getattr(args, "rebuild", False))


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
    import numpy as np

    order = _order(args)
    a, b = args.steps if args.steps else (args.step, args.step + 1)
    tokens = np.stack([order.batch(n, args.batch_size) for n in range(a, b)])  # (steps, B, S+1)
    if args.out:
        from pythia.io import atomic_path

        with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
            np.save(f, tokens if args.steps else tokens[0])
        print(f"wrote {args.out}: shape {tokens.shape if args.steps else tokens[0].shape} int64")
    tok = None
    if args.decode:
        from pythia.data.tokenizer import load_tokenizer

        tok = load_tokenizer(_decode_path(args))
    if args.out and not args.decode:
        return 0
    for s, block in zip(range(a, b), tokens):
        for r, row in enumerate(block):
            k = s * args.batch_size + r
            body = tok.decode(row.tolist(), skip_special_tokens=False) if tok else " ".join(map(str, row.tolist()))
            print(f"=== step {s} row {r} (position {k}) ===\n{body}")
    return 0


def _where(args) -> int:
    order = _order(args)
    if args.position is not None:
        rows = order.locate(args.position)
    else:
        rows = order.find_document(args.document, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if args.position is not None:
        print(f"position {args.position} (step {args.position // args.batch_size}, row "
              f"{args.position % args.batch_size}) = sample {rows[0]['sample'] if rows else '?'}:")
        for r in rows:
            src = r["source"] or {}
            print(f"  tokens [{r['sample_offset']}, {r['sample_offset'] + r['doc_end'] - r['doc_start']}) "
                  f"<- document {r['document']} tokens [{r['doc_start']}, {r['doc_end']})  "
                  f"{src.get('file', '')}:{src.get('location', '')} {json.dumps(src.get('fields', {}))}")
    else:
        print(f"document {args.document}: trained on at {len(rows)} positions")
        for r in rows:
            print(f"  step {r['step']} row {r['row']} (position {r['position']}, copy {r['copy']}): "
                  f"document tokens [{r['doc_start']}, {r['doc_end']}) at sample offset {r['sample_offset']}")
    return 0


def _preshuffle(args) -> int:
    from pythia.data.preshuffle import export_preshuffled

    order = _order(args)
    n = args.num_positions
    if n is None and args.export_steps is not None:
        n = args.export_steps * args.batch_size
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
    p.add_argument("inputs", nargs="+", help="corpus files or folders (.jsonl[.zst|.gz], .parquet, text)")
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
    p.add_argument("inputs", nargs="+", help="corpus files or folders (one document per plain-text file)")
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
             "  pythia data batch data/pile --seq-len 2048 --train-iters 143000 --batch-size 1024 --step 142999 --out b.npy\n"
             "  pythia data batch pile-preshuffled/document --preshuffled --batch-size 1024 --steps 0:2 --decode\n", _batch)
    p.add_argument("prefix", help="dataset PREFIX")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--step", type=int, help="0-based optimizer step")
    g.add_argument("--steps", type=_steps, help="steps A:B (end exclusive); saved as (B-A, batch, S+1)")
    p.add_argument("--decode", action="store_true", help="print the text (tokenizer from --tokenizer or the manifest)")
    p.add_argument("--tokenizer", help="tokenizer.json for --decode")
    p.add_argument("--out", help="save the int64 tokens as .npy")
    _order_args(p, preshuffled=True)

    p = _add(dsub, "where", "provenance: position -> documents, or document -> steps",
             "With --position k: the documents, token ranges and source metadata that make up training "
             "position k. With --document d: every step, row and offset at which document d's tokens "
             "were trained on (a document can appear once per epoch copy).",
             "  pythia data where data/pile --seq-len 2048 --train-iters 143000 --position 12345\n"
             "  pythia data where data/pile --seq-len 2048 --train-iters 143000 --document 42 --json\n", _where)
    p.add_argument("prefix", help="dataset PREFIX")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--position", type=int, help="training position k")
    g.add_argument("--document", type=int, help="document (item) id d")
    p.add_argument("--json", action="store_true", help="print JSON records")
    _order_args(p)

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
