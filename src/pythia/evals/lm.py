"""The `pythia` model of lm-evaluation-harness 0.4: our GPTNeoX and batched generator behind
lm-eval's `LM` API, scoring exactly what lm-eval's own `hf` model scores.

What is the same as `hf` (lm_eval/models/huggingface.py, HFLM) and must stay so:
- tokenization: the checkpoint's own tokenizer through transformers' AutoTokenizer, HFLM's
  `tok_encode` rules (BOS prefix check, add_bos_token), TemplateLM's context/continuation
  split (trailing context spaces move to the continuation), the EOT token as the prefix of
  empty contexts and of rolling windows, `max_length` = the config's max_position_embeddings;
- scoring: one forward of `(context + continuation)[-(max_length+1):][:-1]` per distinct
  input, log_softmax in the model dtype, `is_greedy` = the argmax equals the continuation,
  the log-probabilities summed in a (1, n) tensor; rolling windows from lm_eval.utils;
- generation: greedy, context left-truncated to max_length - max_gen_toks, stop at EOT or
  at a stop string (the EOT text added to `until`), the output cut at the first stop string.

What differs is the batching. HFLM pads a batch to its longest row, and on CPU a row's
logits then change in the last bits with the padded length (SDPA and GEMM blocking). Here
only inputs of one length share a forward, so every number is bit-identical to `hf` at its
default batch_size=1 (tests compare), while requests are still batched: sorted by length,
deduplicated (multiple choice shares inputs across one-token choices), and generated
together by `pythia.generate.generate_greedy_ragged`, which stops when every row is done.

`import lm_eval.models` comes first: lm-eval 0.4 fills its model registry lazily only while
the registry is empty (api/registry.get_model), so registering `pythia` into an empty
registry would make `hf` and every other model unknown.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (before register_model: see module docstring)
import torch
import torch.nn.functional as F
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text
from tqdm.auto import tqdm

__all__ = ["PythiaLM", "load_hf_tokenizer", "open_checkpoint"]

LOGITS_BUDGET = 1 << 26  # logits elements per forward (256 MiB in fp32): caps rows x length x vocab
ENCODE_CACHE_ITEMS = 200_000  # tokenized strings kept for reuse (a few large tasks' prompts)
GREEDY_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k"}
"""Generation settings greedy decoding honours (top_p/top_k do nothing without sampling, as in
transformers); anything else (repetition_penalty, ...) would change hf's output: refused."""


def load_hf_tokenizer(path: str | Path):
    """The tokenizer lm-eval's `hf` model would load for this folder (AutoTokenizer, fast)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), use_fast=True)


def open_checkpoint(pretrained: str, member: str | None = None, revision: Any = None):
    """`pretrained` (run folder, demo output, member or step folder, Hub repo id) + member +
    revision -> a `pythia.run.Checkpoint`; a bad one is named with what is available."""
    from ..run import open_run

    run = open_run(pretrained)
    m = run.member(member)
    step = revision if revision is not None else (run.focus_step if run.focus_member == m.name else None)
    ck = m.checkpoint(step)
    problems = ck.problems()
    if problems:
        raise ValueError(f"{ck.path}: checkpoint fails its manifest ({'; '.join(problems[:3])})")
    return ck


def _int_or_auto(value: Any, auto: int) -> int:
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return auto
    return int(value)


@register_model("pythia")
class PythiaLM(TemplateLM):
    """lm-eval model `pythia`: `--model pythia --model_args pretrained=RUN,member=M,revision=stepN`
    (plus device, dtype, batch_size, max_length), or `PythiaLM(model=..., tokenizer=...)` for
    a model already in memory (the `eval` analysis)."""

    def __init__(self, pretrained: str | None = None, member: str | None = None, revision: Any = None, *,
                 model=None, tokenizer=None, device: str | None = None, dtype: Any = None, batch_size: Any = 16,
                 max_batch_size: Any = None, max_length: Any = None, add_bos_token: Any = None,
                 prefix_token_id: Any = None, progress: bool = True, encode_cache: dict | None = None) -> None:
        super().__init__()
        self.checkpoint = None
        if model is None:
            if pretrained is None:
                raise ValueError("model pythia needs pretrained=RUN (a run folder, demo output, member or step "
                                 "folder, or a Hub repo id in the local cache), e.g. "
                                 "--model_args pretrained=demo-output/run,member=d64-l2-seed1,revision=step128")
            self.checkpoint = open_checkpoint(pretrained, member, revision)
            model = self.checkpoint.load(device=device or "cpu", dtype=dtype)
            tokenizer = tokenizer or self.checkpoint.path
        if tokenizer is None:
            raise ValueError("PythiaLM(model=...) needs tokenizer= (a folder or a transformers tokenizer)")
        self.model = model.eval()
        self.tokenizer = load_hf_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self._device = self.model.embed_out.weight.device
        self.batch_size = _int_or_auto(batch_size, 64)
        self._max_length = int(max_length) if max_length else None
        self.add_bos_token = None if add_bos_token is None else str(add_bos_token).lower() in ("1", "true", "yes")
        self.custom_prefix_token_id = None if prefix_token_id is None else int(prefix_token_id)
        self.pretrained, self.revision = pretrained, revision
        self.progress = progress
        self._encoded = {} if encode_cache is None else encode_cache
        """string -> token ids; a sweep passes one dict per tokenizer, so each prompt is
        tokenized once for all checkpoints (the requests are the same at every step)."""

    # -- what HFLM exposes -------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or self.model.config.max_seq_len

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "pythia")).replace("/", "__")

    def get_model_info(self) -> dict:
        """Goes into lm-eval's result JSON `config`."""
        info = {"model_num_parameters": self.model.num_params(), "model_dtype": str(self.model.embed_out.weight.dtype)}
        if self.checkpoint is not None:
            info.update(model_revision=self.checkpoint.revision, model_sha=self.checkpoint.digest)
        return info

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        """HFLM.tok_encode: the tokenizer's default special tokens unless told, none when the
        string already starts with the prefix (BOS) text."""
        if add_special_tokens is not None:
            special = {"add_special_tokens": add_special_tokens}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        else:
            special = {}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = self._encode(string, special.get("add_special_tokens"))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _encode(self, string: str, special: bool | None) -> list[int]:
        key = (string, special)
        ids = self._encoded.get(key)
        if ids is None:
            ids = self.tokenizer.encode(string, **({} if special is None else {"add_special_tokens": special}))
            if len(self._encoded) < ENCODE_CACHE_ITEMS:
                self._encoded[key] = ids
        return list(ids)

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # -- scoring -----------------------------------------------------------------------------
    def _forward(self, rows: list[tuple[int, ...]]) -> torch.Tensor:
        """Logits (B, T, V) of equal-length inputs, in the model dtype."""
        ids = torch.tensor(rows, dtype=torch.long, device=self._device)  # (B, T)
        with torch.no_grad():
            return self.model(ids)

    def _rows_per_forward(self, length: int) -> int:
        return max(1, min(self.batch_size, LOGITS_BUDGET // max(1, length * self.model.config.vocab_size)))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) | None, context_enc, continuation_enc) ->
        (sum of continuation log-probs, continuation is the greedy one), in request order."""
        L = self.max_length
        users: dict[tuple[int, ...], list[int]] = defaultdict(list)  # distinct input -> requests
        for i, (_, ctx, cont) in enumerate(requests):
            if not ctx or not cont or len(cont) > L:
                raise ValueError(f"request {i}: needs a non-empty context and a continuation of 1..{L} tokens")
            users[tuple((ctx + cont)[-(L + 1):][:-1])].append(i)
        by_len: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        for inp in users:
            by_len[len(inp)].append(inp)
        out: list = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or not self.progress or None, desc="pythia loglikelihood")
        for T in sorted(by_len, reverse=True):
            inputs = sorted(by_len[T])
            n = self._rows_per_forward(T)
            for s in range(0, len(inputs), n):
                chunk = inputs[s:s + n]
                logits = self._forward(chunk)  # (b, T, V)
                for row, inp in zip(logits, chunk):
                    self._score_row(row, inp, users[inp], requests, out)
                    bar.update(len(users[inp]))
        bar.close()
        return out

    def _score_row(self, logits: torch.Tensor, inp, ids: list[int], requests, out: list) -> None:
        """Every request whose input is `inp`, from that input's logits (T, V)."""
        need = max(len(requests[i][2]) for i in ids)
        logp = F.log_softmax(logits[-need:], dim=-1)  # (need, V): rows are independent, same bits as HFLM
        for i in ids:
            key, _, cont = requests[i]
            lp = logp[-len(cont):].unsqueeze(0)  # (1, n, V)
            cont_t = torch.tensor(cont, dtype=torch.long, device=lp.device).unsqueeze(0)  # (1, n)
            greedy = bool((lp.argmax(dim=-1) == cont_t).all())
            answer = (float(torch.gather(lp, 2, cont_t.unsqueeze(-1)).squeeze(-1).sum()), greedy)
            out[i] = answer
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """TemplateLM's: tokenize (context, continuation) pairs, then `_loglikelihood_tokens`."""
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole strings: lm-eval's disjoint rolling windows of max_length
        tokens after the prefix token, each scored like a loglikelihood request, then summed."""
        windows, counts = [], []
        for (string,) in (r.args for r in requests):
            parts = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            windows += [(None,) + w for w in parts]
            counts.append(len(parts))
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        out, at = [], 0
        for req, n in zip(requests, counts):
            total = sum(s for s, _ in scores[at:at + n])
            at += n
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return out

    # -- generation --------------------------------------------------------------------------
    def _encode_prompt(self, context: str, max_ctx: int) -> list[int]:
        """HFLM.tok_batch_encode for one string, left-truncated to max_ctx tokens."""
        if has_bos_prefix(context, getattr(self.tokenizer, "bos_token", None)):
            special = {"add_special_tokens": False}
        elif self.add_bos_token is not None:
            special = {"add_special_tokens": self.add_bos_token}
        else:
            special = {}
        ids = self._encode(context, special.get("add_special_tokens"))[-max_ctx:]
        return ids or [self.prefix_token_id]  # an empty prompt conditions on the prefix token

    def _text(self, tokens: list[int], until: list[str]) -> tuple[str, bool]:
        """(generated text cut at EOT and at the first stop string, whether it was cut)."""
        cut = self.eot_token_id in tokens
        if cut:
            tokens = tokens[: tokens.index(self.eot_token_id)]
        text = self.tok_decode(tokens)
        stopped = cut or any(term and term in text for term in until)
        return postprocess_generated_text(text, until, None), stopped

    def _stop_test(self, rows: int, until: list[str]):
        """For generate_greedy_ragged: True once every row has hit EOT or a stop string (a row,
        once done, is not decoded again)."""
        done = [False] * rows

        def all_stopped(new: torch.Tensor) -> bool:  # (rows, i) tokens so far
            for j, row in enumerate(new.tolist()):
                done[j] = done[j] or self._text(row, until)[1]
            return all(done)

        return all_stopped

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from ..generate import generate_greedy_ragged

        args = [r.args for r in requests]
        groups: dict[str, list[int]] = defaultdict(list)  # same generation kwargs -> one batch stream
        for i, (_, kw) in enumerate(args):
            groups[json.dumps(kw, sort_keys=True, default=str)].append(i)
        out: list = [None] * len(args)
        eot_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        bar = tqdm(total=len(args), disable=disable_tqdm or not self.progress or None, desc="pythia generate_until")
        for ids in groups.values():
            kw = normalize_gen_kwargs(args[ids[0]][1], self.max_gen_toks)
            other = sorted(set(kw) - GREEDY_KWARGS)
            if kw.get("do_sample") or other:
                raise ValueError(f"model pythia decodes greedily (until, max_gen_toks); a task asks for "
                                 f"{'sampling' if kw.get('do_sample') else other}: {args[ids[0]][1]}")
            until = handle_stop_sequences(kw.pop("until", None), eos=eot_text)
            max_gen = kw.pop("max_gen_toks")
            if max_gen >= self.max_length:
                raise ValueError(f"max_gen_toks {max_gen} must be below the model's max_length {self.max_length}")
            prompts = {i: self._encode_prompt(args[i][0], self.max_length - max_gen) for i in ids}
            order = sorted(ids, key=lambda i: (-len(prompts[i]), args[i][0]))
            for s in range(0, len(order), self.batch_size):
                chunk = order[s:s + self.batch_size]
                new = generate_greedy_ragged(self.model, [prompts[i] for i in chunk], max_gen,
                                             stop=self._stop_test(len(chunk), until))
                for i, row in zip(chunk, new.tolist()):
                    out[i] = self._text(row, until)[0]
                    self.cache_hook.add_partial("generate_until", args[i], out[i])
                bar.update(len(chunk))
        bar.close()
        return out
