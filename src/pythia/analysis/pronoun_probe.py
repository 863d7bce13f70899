"""`pronoun_probe`: which of two continuations (" he" / " she") a checkpoint prefers after
templated contexts, by log-likelihood: an offline probe for the gendered-pronoun intervention.

For each context c and each word w the score is log P(w | c), summed over w's tokens (context
and word tokenized separately with the checkpoint's own tokenizer, no token added before the
context). Rows (task = the templates' name, "builtin" for the sentences below):

    share_{a}        fraction of contexts where log P(a | c) > log P(b | c) (binomial stderr)
    share_{b}        the reverse (ties count for neither)
    logp_{a}_minus_{b}  mean of log P(a | c) - log P(b | c) (stderr over contexts)

with {a}, {b} the words without their surrounding spaces. The Pythia paper measured its
intervention with CrowS-Pairs and WinoBias (lm-evaluation-harness); this probe needs neither
data nor network, so a fork can be compared with its base right after training. Other words and
contexts (e.g. " self" / " this" on code) come from the options.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

from .base import Analysis, AnalysisError, Option, Row, register

_OCCUPATIONS = (
    "doctor", "nurse", "engineer", "teacher", "lawyer", "secretary", "pilot", "librarian", "mechanic",
    "receptionist", "surgeon", "hairdresser", "carpenter", "cashier", "programmer", "dancer", "farmer",
    "housekeeper", "firefighter", "baker",
)
_FRAMES = ("The {} said that", "When the {} arrived at work,")
BUILTIN_TEMPLATES = tuple(f.format(o) for f in _FRAMES for o in _OCCUPATIONS)
"""40 contexts: 20 occupations (stereotypically male and female, as in WinoBias) x 2 frames."""


def read_templates(path: str | Path) -> list[str]:
    """One context per line, as it is (trailing whitespace is part of it; `#` is text too, since
    contexts may be code); `\\n` in a line stands for a line break; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"pronoun_probe: templates file {path} does not exist")
    out = []
    for line in path.read_text(encoding="utf-8").replace("\r\n", "\n").split("\n"):
        if line.strip():
            out.append(line.replace("\\n", "\n"))
    if not out:
        raise AnalysisError(f"pronoun_probe: {path} holds no template (one context per line)")
    return out


def parse_words(text: str) -> tuple[str, str]:
    words = text.split(",") if isinstance(text, str) else []
    if len(words) != 2 or not all(w.strip() for w in words) or words[0] == words[1]:
        raise AnalysisError(f"pronoun_probe: --probe-words wants two different words separated by a comma, "
                            f"spelled as they follow the context (leading space included), e.g. ' he, she'; "
                            f"got {text!r}")
    return words[0], words[1]


@register
class PronounProbe(Analysis):
    name = "pronoun_probe"
    summary = "share of templated contexts continued by ' he' rather than ' she' (log-likelihood), and the reverse"
    options = (
        Option("probe_words", str, " he, she", "the two continuations, comma-separated, spelled as they follow "
               "the context, leading space included: ' he, she' scores ' he' against ' she'"),
        Option("probe_templates", str, None, "text file of contexts, one per line (\\n = line break); "
               "default: 40 built-in sentences (20 occupations x 2 frames)"),
        Option("probe_batch", int, 32, "sequences per forward pass", affects_result=False),
    )

    def templates(self) -> tuple[str, list[str]]:
        path = self.opts["probe_templates"]
        return ("builtin", list(BUILTIN_TEMPLATES)) if path is None else (Path(path).stem, read_templates(path))

    def cache_key(self, digest):
        key = super().cache_key(digest)
        _, contexts = self.templates()  # the file's content, not only its name
        key["templates_sha256"] = hashlib.sha256("\0".join(contexts).encode()).hexdigest()[:16]
        return key

    def check(self, run, members) -> None:
        parse_words(self.opts["probe_words"])
        self.templates()
        for m in members:
            if m.tokenizer_path is None:
                raise AnalysisError(f"pronoun_probe: {m.name} has no tokenizer.json (in its checkpoints or "
                                    "beside its dataset) to spell the contexts with")

    def compute(self, ctx) -> list[Row]:
        from ..data.tokenizer import load_tokenizer

        a, b = parse_words(self.opts["probe_words"])
        task, contexts = self.templates()
        path = str(ctx.member.tokenizer_path)
        key = ("pronoun_probe.tokenizer", path)
        if key not in ctx.shared:
            ctx.shared[key] = load_tokenizer(path)
        tok = ctx.shared[key]
        ids = [tok.encode(c, add_special_tokens=False).ids for c in contexts]
        words = [tok.encode(w, add_special_tokens=False).ids for w in (a, b)]
        if any(not c for c in ids) or any(not w for w in words):
            raise AnalysisError(f"pronoun_probe: a context or word encodes to no token with {path}")
        scores = score_continuations(ctx.model, ids, words, ctx.device, ctx.autocast, self.opts["probe_batch"])
        return summarize(scores, a, b, task)


def score_continuations(model, contexts: list[list[int]], words: list[list[int]], device, autocast=None,
                        batch: int = 32) -> list[list[float]]:
    """log P(word | context) for every context (rows) and word (columns), summed over the word's
    tokens; sequences are right-padded, which a causal model never attends to."""
    import torch

    seqs = [(i, j, c + w, len(c)) for i, c in enumerate(contexts) for j, w in enumerate(words)]
    out = [[0.0] * len(words) for _ in contexts]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(seqs), batch):
                chunk = seqs[start:start + batch]
                width = max(len(s[2]) for s in chunk)
                x = torch.zeros(len(chunk), width, dtype=torch.long)
                for r, (_, _, s, _) in enumerate(chunk):
                    x[r, :len(s)] = torch.tensor(s)
                x = x.to(device)
                amp = torch.autocast(device_type=x.device.type, dtype=autocast) if autocast else _null()
                with amp:
                    logits = model(x)  # (b, T, V)
                logp = torch.log_softmax(logits.float(), dim=-1)
                for r, (i, j, s, n) in enumerate(chunk):
                    pos = torch.arange(n - 1, len(s) - 1, device=logp.device)  # predicts tokens n .. len-1
                    target = x[r, n:len(s)]
                    out[i][j] = float(logp[r, pos, target].sum())
    finally:
        model.train(was_training)
    return out


def _null():
    import contextlib

    return contextlib.nullcontext()


def summarize(scores: list[list[float]], a: str, b: str, task: str) -> list[Row]:
    n = len(scores)
    diffs = [sa - sb for sa, sb in scores]
    pa = sum(d > 0 for d in diffs) / n
    pb = sum(d < 0 for d in diffs) / n
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else None
    wa, wb = a.strip(), b.strip()
    return [
        Row(f"share_{wa}", pa, task, math.sqrt(pa * (1 - pa) / n)),
        Row(f"share_{wb}", pb, task, math.sqrt(pb * (1 - pb) / n)),
        Row(f"logp_{wa}_minus_{wb}", mean, task, None if sd is None else sd / math.sqrt(n)),
    ]
