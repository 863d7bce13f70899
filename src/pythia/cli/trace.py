"""`pythia trace --run RUN --member M [--step S] TEXT`: a thin front over pythia.analysis.trace."""
from __future__ import annotations

import argparse
import json
import sys

from .counts import parse_ids

_DESCRIPTION = """\
Trace a text back to what a run member trained on (OLMoTrace, Liu et al. 2025) and say when
each part was seen. The text is tokenized exactly (no space prepended); for every start position
the longest span the member trained on verbatim is found (suffix-array index of its data, built
beside it on first use, and its order's step sidecar), cut after the first delimiter, backed off
to whole words; spans trained on more than --max-frequency times are dropped, spans inside
another are dropped, and the ceil(--span-density x tokens) best ranked are kept.

For each span: its count over all training, what the checkpoint at --step had seen of it
(count_until_step; default: the last checkpoint), the first and last step it was trained at,
occurrences between consecutive checkpoints, and up to --max-documents documents holding a
trained occurrence (source metadata, offset, context, steps), optionally ordered by BM25.

"Trained on" follows `pythia data count`: an occurrence inside a document, counted at the step of
the sample whose input positions hold its first token, once per epoch copy. A fork is counted over
its base's data (its intervention's edits are not). With --generate, checkpoint --step first
continues PROMPT greedily (--max-new-tokens, end-of-document suppressed); its output is traced."""

_EPILOG = """\
examples:
  pythia trace --run demo-output --member d64-l2-seed1 --step 128 'def __init__(self, name'
  pythia trace --run demo-output --member d64-l2-seed1 --generate 'import os' --max-new-tokens 32
  pythia trace --run demo-output --member d64-l2-seed1 --tokens 510,285,77 --json
  pythia trace --run EleutherAI/pythia-70m --data pile/document --step 1000 'The quick brown fox' --bm25
  pythia trace --run demo-output --member d64-l2-seed1 --span-density 1 --max-frequency 1000 --rank rarity TEXT

JSON (--json): {"spans": [{"start", "end" (token offsets, end exclusive), "text", "count",
"count_until_step", "corpus_count", "first_step", "last_step", "intervals", "documents": [...]}],
"text", "tokens", "until_step", "member", ...}.
"""


def _options(args):
    from ..data.trace import TraceOptions

    delims = tuple(d.replace("\\n", "\n") for d in args.delimiters.split(",") if d) if args.delimiters else ()
    return TraceOptions(whole_words=not args.partial_words, delimiters=delims,
                        max_frequency=args.max_frequency or None, span_density=args.span_density or None,
                        rank=args.rank, min_length=args.min_length, max_documents=args.max_documents,
                        context=args.context, bm25=args.bm25, seed=args.seed).check()


def _trace(args) -> int:
    from ..analysis.trace import check_step, generate, open_tracer, trace_member
    from ..run import open_run

    given = [x for x in (args.text, args.tokens, args.generate) if x is not None]
    if len(given) != 1:
        raise ValueError("give one of TEXT, --tokens IDS or --generate PROMPT")
    if args.max_new_tokens is not None and args.generate is None:
        raise ValueError("--max-new-tokens goes with --generate PROMPT")
    options = _options(args)
    run = open_run(args.run, data=args.data)
    member = run.member(args.member)
    step = check_step(member, args.step)
    say = (lambda msg: print(msg, file=sys.stderr))
    tracer = open_tracer(member, index_dir=args.index, progress=not args.no_progress, log=say)
    extra, query, text, ids = {}, None, args.text, args.tokens
    if args.generate is not None:
        if step not in member.steps:
            from ..run import compact_steps

            raise ValueError(f"--generate needs a checkpoint: {member.name} has none at step {step} "
                             f"(checkpoints {compact_steps(member.steps)})")
        prompt_ids, ids = generate(member, step, args.generate, args.max_new_tokens or 32, tracer=tracer)
        text = None
        extra = {"prompt": args.generate, "prompt_tokens": prompt_ids}
        query = args.generate + (tracer.decode(ids) or "")
    result = trace_member(member, text, ids=ids if text is None else None, step=step, options=options,
                          tracer=tracer, query=query)
    result.extra.update(extra)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(format_trace(result))
    return 0


def format_trace(t) -> str:
    """The spans as text: where, how often, when first seen, and the documents."""
    lines = []
    if "prompt" in t.extra:
        lines.append(f"prompt {t.extra['prompt']!r} -> generated {t.text!r}")
    else:
        lines.append(f"text {t.text!r}" if t.text is not None else f"tokens {t.tokens}")
    lines.append(f"{t.extra.get('member', '')}: {len(t.tokens)} tokens, {len(t.spans)} span(s) kept of "
                 f"{t.candidates} maximal; counts over {t.trained_steps} trained steps, 'by step' = what "
                 f"step {t.until_step} had seen")
    for s in t.spans:
        first = "never trained" if s.first_step is None else f"first step {s.first_step}, last {s.last_step}"
        lines.append(f"  [{s.start}:{s.end}] {s.text!r}: trained {s.count}x ({first}); by step {t.until_step}: "
                     f"{s.count_until_step}; in the dataset {s.corpus_count}x")
        busy = [f"{i['from']}-{i['to']}: {i['count']}" for i in s.intervals if i["count"]]
        if busy:
            lines.append("    between checkpoints: " + ", ".join(busy))
        for d in s.documents:
            src = d.get("source") or {}
            where = f"{src.get('file', '')}:{src.get('location', '')}".strip(":")
            ctx = d["context"]
            snippet = (f"{ctx['before']}[[{ctx['span']}]]{ctx['after']}" if isinstance(ctx["span"], str)
                       else f"{ctx['before']} [[{ctx['span']}]] {ctx['after']}")
            score = f", bm25 {d['bm25']:.2f}" if "bm25" in d else ""
            lines.append(f"    document {d['document']} {where} offset {d['offset']}: trained {d['trained']}x, first at "
                         f"step {d['first_step']}{score}\n      {snippet!r}")
        if s.documents_total > len(s.documents):
            lines.append(f"    ... {s.documents_total - len(s.documents)} more document(s) (--max-documents)")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("trace", help="trace a text to the training data: maximal spans and the steps they were seen",
                       description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to trace (tokenized exactly)")
    p.add_argument("--run", required=True, help="run folder, demo output, member folder or Hub repo id(s)")
    p.add_argument("--member", help="member of the run (default: the only or focused one)")
    p.add_argument("--step", help="the checkpoint whose knowledge count_until_step reports, and that --generate "
                                  "uses (default: the last checkpoint)")
    p.add_argument("--data", metavar="PREFIX", help="Hub repos only: the preshuffled training data they read")
    p.add_argument("--tokens", type=parse_ids, help="token ids to trace instead of TEXT, e.g. 510,285")
    g = p.add_argument_group("generate, then trace")
    g.add_argument("--generate", metavar="PROMPT", help="trace the greedy continuation of PROMPT by checkpoint --step")
    g.add_argument("--max-new-tokens", type=int, help="tokens to generate (default 32)")
    g = p.add_argument_group("spans (OLMoTrace's filters)")
    g.add_argument("--partial-words", action="store_true", help="let spans start and end inside words")
    g.add_argument("--delimiters", default="\\n,.", help="comma-separated strings a span holds only as its last token "
                   "('\\n' is a newline; '' for none; default '\\n,.')")
    g.add_argument("--max-frequency", type=int, default=10, help="drop spans trained on more often (default 10; 0: "
                   "no limit)")
    g.add_argument("--span-density", type=float, default=0.05, help="keep ceil(density x tokens) spans (default "
                   "0.05; 0: keep all)")
    g.add_argument("--rank", default="length", choices=("length", "rarity"),
                   help="which spans the density keeps: longest, or rarest (lowest unigram log-probability)")
    g.add_argument("--min-length", type=int, default=1, help="shortest span in tokens (default 1)")
    g = p.add_argument_group("documents")
    g.add_argument("--max-documents", type=int, default=10, help="documents per span (default 10, a seeded sample)")
    g.add_argument("--context", type=int, default=32, help="tokens of context on each side (default 32)")
    g.add_argument("--bm25", action="store_true", help="order documents by BM25 relevance to the text")
    g.add_argument("--seed", type=int, default=0, help="seed of the document sample (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--index", help="n-gram index folder (default PREFIX.sa beside the dataset)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_trace)
