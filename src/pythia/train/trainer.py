"""The training loop of one suite member: resume, step, evaluate, checkpoint.

One optimizer step n (0-based) reads the global batch order.batch(n, B) -> (B, S+1), splits
it into gradient-accumulation micro-steps and data-parallel rank slices exactly like
GPT-NeoX's sampler, averages the loss over the global batch (each micro loss / gas), unscales,
clips the global norm to grad_clip and applies AdamW with lr_at(updates applied so far).
Overflowing steps (non-finite grad norm) are skipped without advancing the lr schedule, as
DeepSpeed's fp16 optimizer does. Checkpoint stepN is written after N updates; step0 before any.
"""
from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from .. import layout
from ..hf import write_pretrained
from ..loss import token_loss
from ..matrix_stats import is_weight_matrix
from . import checkpoint as ckpt
from .callbacks import CheckpointCallback, CheckpointSaved
from .disk import explain_disk_full
from .compile import choose_mode, compile_head_default, warm_up
from .distributed import DistContext, parallelize, rank_slice, unwrap
from .metrics import MemberLog, batch_fingerprint
from .micro_batch import auto_micro_batch, cache_key
from .preempt import StopSignal, TrainingInterrupted
from .optim import DynamicLossScaler, build_optimizer, clip_grad_norm, set_lr, step_unless_nonfinite
from .schedule import lr_at
from .spec import Member, SuiteSpec

_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_build_model(config, device: torch.device) -> torch.nn.Module:
    from ..model import GPTNeoX

    return GPTNeoX(config, device=device)


@dataclass(frozen=True)
class StepOptions:
    """Speed switches of the step beyond the spec (benchmarks/gpu_bench.py tries them); none of
    them changes which batches are trained or the recipe."""

    compile_mode: str = "default"
    """torch.compile mode when train.compile is on; "reduce-overhead" adds CUDA graphs."""
    compile_head: bool | None = None
    """Compile the fused head + loss with the layers; None: on CUDA only (compile.compile_head_default)."""
    head_chunk_rows: int | None = None
    """Rows per logits chunk of the fused head + loss (GPTNeoX.head_chunk_rows); None: its default."""
    fused_adam: bool | None = None
    """None: the fused AdamW kernel on CUDA with plain parameters (optim.build_optimizer)."""
    deferred_stats: bool | None = None
    """Keep each step's loss, grad norm, skip flag and lr on the device (the overflow skip done by
    the fused AdamW kernel, the lr looked up on the device) and read them every
    `read_stats_every` steps in one transfer: no host sync in the step. None: wherever that
    applies (a fused optimizer and no fp16 loss scaling, i.e. bf16/fp32 on CUDA)."""
    read_stats_every: int = 8
    """With deferred stats: steps between two reads (and metrics.jsonl writes); checkpoints,
    stop signals and the end read at once."""


@dataclass
class MemberRun:
    """Everything one member's loop needs; suite.py builds it."""

    member: Member
    spec: SuiteSpec
    member_dir: Path
    order: Any
    """Object with .batch(step, batch_size) -> np.ndarray int64 (B, S+1) (a TrainingOrder)."""
    callbacks: tuple[CheckpointCallback, ...] = ()
    """Observers of every checkpoint (train/callbacks.py), e.g. the suite's checkpoint-time analyses."""
    ctx: DistContext = field(default_factory=DistContext)
    build_model: Callable = default_build_model
    tokenizer: Any = None
    """tokenizers.Tokenizer (or tokenizer.json path) copied into every checkpoint; None: weights only."""
    fork_from: int | None = None
    """A fork (pythia.train.intervention): the step it starts from; it never trains below it."""
    options: StepOptions = field(default_factory=StepOptions)


class Trainer:
    def __init__(self, run: MemberRun):
        self.run, self.spec, self.ctx = run, run.spec, run.ctx
        t = self.spec.train
        self.B = t.global_batch
        self._set_micro(t.micro_batch if isinstance(t.micro_batch, int) else self.B // self.ctx.world_size)
        self.ckpt_steps = self.spec.checkpoint_steps()
        self.ckpt_index = {step: i for i, step in enumerate(self.ckpt_steps)}
        self.optimizer_steps = set(self.spec.optimizer_state_steps())
        self.device = self.ctx.device
        self.autocast_dtype = _AUTOCAST[t.precision]
        self.fsdp = t.parallel == "fsdp" and self.ctx.distributed
        self.gradients: dict[str, torch.Tensor] | None = None
        """checkpoints.gradients: the weight matrices' gradients of the update that makes the next checkpoint."""
        self.compiled = None  # pythia.train.compile.CompiledModel while the step runs compiled
        self._pending: list[tuple] = []  # (record, start time, seq_len) of steps whose device values are unread
        self._settled: list[dict] = []  # finished records not yet logged
        self._last_settle = 0.0

    def _set_micro(self, micro: int) -> None:
        world = self.ctx.world_size
        if self.B % (micro * world):
            raise ValueError(f"train.global_batch {self.B} is not a multiple of micro_batch {micro} x "
                             f"data-parallel size {world}")
        self.micro, self.gas = micro, self.B // (micro * world)

    # -- setup -----------------------------------------------------------------------------
    def setup(self) -> int:
        """Build model + optimizer, resume from the newest intact checkpoint; returns its step."""
        m, t = self.run.member, self.spec.train
        if self.ctx.is_main:
            for note in ckpt.recover_interrupted_writes(self.run.member_dir):
                print(f"[{m.name}] {note}")
        self.ctx.barrier()
        resume = self._find_resume_point()
        if self.run.fork_from is not None and (resume is None or resume < self.run.fork_from):
            raise ValueError(f"fork {m.name}: no resumable checkpoint at or after its from_step {self.run.fork_from} "
                             f"in {self.run.member_dir}; a fork never retrains its base's steps (delete the fork's "
                             "folder to start it again from its base)")
        torch.manual_seed(m.seed)
        np.random.seed(m.seed % 2**32)
        random.seed(m.seed)
        model = self.run.build_model(m.config, self.device)
        model.float()  # fp32 master weights; bf16/fp16 only inside autocast
        state = None
        if resume is not None:
            step_dir = self.run.member_dir / layout.step_dir_name(resume)
            weights = ckpt.load_model_weights(step_dir)
            missing, unexpected = model.load_state_dict(weights, strict=False)
            if unexpected or [k for k in missing if k in dict(model.named_parameters())]:
                raise ValueError(f"{step_dir}: weights do not fit {m.config.name}: missing {missing}, unexpected {unexpected}")
            state = ckpt.load_training_state(step_dir)
        opts = self.run.options
        if opts.head_chunk_rows is not None:
            model.head_chunk_rows = opts.head_chunk_rows
        head = compile_head_default(self.device) if opts.compile_head is None else opts.compile_head
        mode = choose_mode(t.compile, self.device, opts.compile_mode)
        self.model, self.compiled = parallelize(model, self.ctx, t.parallel, mode, head)
        self.optimizer = build_optimizer(self.model, weight_decay=t.weight_decay, betas=t.adam_betas, eps=t.adam_eps,
                                         fused=opts.fused_adam)
        ls = t.loss_scale
        self.scaler = DynamicLossScaler(scale=2.0**ls.initial_power, window=ls.window, hysteresis=ls.hysteresis,
                                        min_scale=ls.min_scale, enabled=t.precision == "fp16")
        possible = bool(self.optimizer.defaults.get("fused")) and not self.scaler.enabled
        if opts.deferred_stats and not possible:
            raise ValueError("deferred_stats needs a fused AdamW and no fp16 loss scaling")
        self.deferred = possible if opts.deferred_stats is None else opts.deferred_stats
        self.updates = 0  # applied (non-skipped) updates = the lr scheduler's counter
        self.step = 0
        if state is not None:
            self._load_optimizer(state, self.run.member_dir / layout.step_dir_name(resume))
            self.scaler.load_state_dict(state.scaler)
            self.updates = int(state.extra["scheduler_step"])
            self.step = state.step
            ckpt.restore_rng(state.rng_tensors, state.rng_scalars)
        if self.deferred:  # every lr the schedule can ask for, indexed by the updates applied
            self._lr_table = torch.tensor([self._lr(u) for u in range(t.iters + 1)], dtype=torch.float64,
                                          device=self.device)
            self._updates_on_device = torch.tensor(self.updates, dtype=torch.long, device=self.device)
        if t.micro_batch == "auto":
            self._auto_micro_batch()
        if self.compiled is not None:  # compile now, report the time once; eager if it fails
            self.compiled = warm_up(self.compiled, lambda: self._probe_step(self.micro), self.ctx.any,
                                    f"[{m.name}]" if self.ctx.is_main else None)
            self.optimizer.zero_grad(set_to_none=True)
        self.log = MemberLog(self.run.member_dir, resume, self.spec.tensorboard) if self.ctx.is_main else None
        return self.step

    def _load_optimizer(self, state: ckpt.TrainingState, step_dir: Path) -> None:
        """Full state (one process / DDP run) or DCP shards (FSDP run), onto any number of ranks."""
        if state.optimizer_format == "full":
            set_optimizer_state_dict(self.model, self.optimizer, state.optimizer,
                                     options=StateDictOptions(full_state_dict=True))
        elif state.optimizer_format == "sharded":
            import torch.distributed.checkpoint as dcp

            osd = get_optimizer_state_dict(self.model, self.optimizer)  # this run's layout, filled in place
            dcp.load({"optimizer": osd}, checkpoint_id=str(step_dir / "training_state" / "optimizer"))
            set_optimizer_state_dict(self.model, self.optimizer, osd)
        elif state.optimizer_format != "empty":  # "empty": no update yet, the fresh optimizer is exact
            raise ValueError(f"{step_dir}: optimizer state {state.optimizer_format!r} cannot be resumed from")

    # -- speed: micro batch, compile warm-up ------------------------------------------------------
    def _probe_step(self, micro: int) -> None:
        """One forward + backward of `micro` dummy rows (no all-reduce under DDP), gradients dropped."""
        self.model.train()
        rows = np.zeros((micro, self.spec.data.seq_len + 1), dtype=np.int64)
        ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        with self.model.no_sync() if ddp else contextlib.nullcontext():
            self._loss(rows).backward()
        self.optimizer.zero_grad(set_to_none=True)

    def _auto_micro_batch(self) -> None:
        """train.micro_batch: auto (pythia.train.micro_batch), probed on the eager model."""
        t, m = self.spec.train, self.run.member
        local = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in self.model.parameters())
        key = cache_key(m.config, self.spec.data.seq_len, t.precision, t.parallel, self.ctx.world_size,
                        self.compiled is not None, self.device)

        def probe(micro: int) -> None:
            with self._eager():
                self._probe_step(micro)

        micro, how = auto_micro_batch(self.B // self.ctx.world_size, self.spec.data.seq_len, self.device, key, probe,
                                      extra_bytes=8.0 * local, ctx=self.ctx)  # + the two fp32 AdamW moments
        self._set_micro(micro)
        if self.ctx.is_main:
            print(f"[{m.name}] train.micro_batch auto: {how}; {self.gas} accumulation step(s) per update")

    def _find_resume_point(self) -> int | None:
        """Newest checkpoint whose files match its manifest and that holds optimizer state;
        corrupt ones are skipped loudly. Rank 0 hashes, the others take its answer."""
        found = None
        if self.ctx.is_main:
            for step in reversed(layout.complete_checkpoints(self.run.member_dir)):
                step_dir = self.run.member_dir / layout.step_dir_name(step)
                problems = layout.check_manifest(step_dir)
                fmt = ckpt.optimizer_format(step_dir)
                if not problems and fmt in ("full", "sharded", "empty"):
                    found = step
                    break
                why = "; ".join(problems[:3]) if problems else (
                    f"it keeps no optimizer state (train.optimizer_state_every: {self.spec.train.optimizer_state_every})"
                    if fmt == "omitted" else "training_state/state.json is missing or unreadable")
                print(f"[{self.run.member.name}] not resuming from {step_dir.name}: {why}")
        return self.ctx.broadcast_object(found)

    # -- one update ------------------------------------------------------------------------
    def _loss(self, rows: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Mean next-token loss of (micro, S+1) windows through the fused head (pythia.loss)."""
        return token_loss(self.model, rows, autocast_dtype=self.autocast_dtype, device=self.device)

    def forward_backward(self, tokens: np.ndarray) -> torch.Tensor:
        """Accumulate (loss x scale) gradients of this rank's slices of a (B, S+1) global batch.

        Each micro loss is divided by gas, so the summed gradient is that of the mean loss over
        the global batch (DDP then averages over ranks). Returns this rank's mean loss as a 0-d
        float64 tensor on the device: reading it is settle()'s job, not a sync per step.
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.scaler.loss_scale
        losses = []
        ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        mine = [rank_slice(self.B, self.micro, self.ctx.world_size, m, self.ctx.rank) for m in range(self.gas)]
        local = torch.from_numpy(np.ascontiguousarray(np.concatenate([tokens[s] for s in mine]), dtype=np.int64))
        if self.device.type == "cuda":  # this rank's rows in one asynchronous copy (pinned): the host never waits
            local = local.pin_memory().to(self.device, non_blocking=True)
        for micro_step in range(self.gas):
            rows = local[micro_step * self.micro:(micro_step + 1) * self.micro]  # (micro, S+1)
            sync = contextlib.nullcontext()
            if ddp and micro_step < self.gas - 1:
                sync = self.model.no_sync()  # all-reduce once, on the last micro-step
            with sync:
                loss = self._loss(rows) / self.gas
                (loss * scale).backward()
            losses.append(loss.detach())
        return torch.stack(losses).double().sum()

    def apply_update(self) -> tuple[float | torch.Tensor, bool | torch.Tensor]:
        """Unscale, clip, AdamW step unless the grad norm overflowed; returns (norm, overflow) as
        floats, or with deferred stats as 0-d device tensors: the fused kernel then skips an
        overflowing step itself and settle() counts the update (no host sync here)."""
        scale = self.scaler.loss_scale
        if scale != 1.0:
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.div_(scale)
        if self.spec.checkpoints.gradients and self.step + 1 in self.ckpt_index:
            self.gradients = self._capture_gradients()
        norm = clip_grad_norm(list(self.model.parameters()), self.spec.train.grad_clip)
        if self.deferred:
            norm = torch.zeros((), device=self.device) if norm is None else norm
            skipped = step_unless_nonfinite(self.optimizer, norm)
            self.optimizer.zero_grad(set_to_none=True)
            return norm, skipped
        grad_norm = 0.0 if norm is None else float(norm)
        overflow = not np.isfinite(grad_norm)
        if not overflow:
            self.optimizer.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, overflow

    def _capture_gradients(self) -> dict[str, torch.Tensor] | None:
        """The weight matrices' gradients, whole, on the CPU of rank 0 (FSDP shards are gathered one
        tensor at a time, so every rank calls this); None on the other ranks."""
        out = {}
        for name, p in unwrap(self.model).named_parameters():
            if p.grad is None or not is_weight_matrix(name, p):
                continue
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            if self.ctx.is_main:
                out[name] = g.detach().float().cpu().clone()
        return out if self.ctx.is_main else None

    def _lr(self, updates: int) -> float:
        """The schedule's lr after `updates` applied updates."""
        m, t = self.run.member, self.spec.train
        return lr_at(updates, lr=m.lr, min_lr=m.min_lr, warmup_iters=self.spec.warmup_iters(), total_iters=t.iters,
                     schedule=t.lr_schedule)

    def train_step(self, n: int) -> dict:
        """Update number n+1 on the global batch of step n; returns its metrics record.

        Its loss, grad_norm, skipped and tokens_per_s (and with deferred stats its lr) are filled
        in by settle(): at once, or with deferred stats every few steps, reading several steps'
        values in one transfer while the device works on the next (it never waits for the host)."""
        t0 = time.perf_counter()
        transformed = getattr(self.run.order, "batch_and_changes", None)  # a fork's InterventionOrder
        tokens, changed = transformed(n, self.B) if transformed else (self.run.order.batch(n, self.B), None)  # (B, S+1)
        fingerprint = batch_fingerprint(tokens)
        if self.deferred:  # the lr of the updates applied so far, looked up on the device (no .item())
            lr = self._lr_table.index_select(0, self._updates_on_device.view(1)).squeeze(0)
        else:
            lr = self._lr(self.updates)
        set_lr(self.optimizer, lr)
        loss = self.forward_backward(tokens)
        grad_norm, overflow = self.apply_update()
        logged_scale = self.scaler.loss_scale
        if self.deferred:
            self._updates_on_device += (overflow == 0).long()
        else:
            self.scaler.update(overflow)
        self.step = n + 1
        record = {
            **({"changed_tokens": changed} if changed is not None else {}),
            "step": self.step,
            "loss": loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "loss_scale": logged_scale,
            "skipped": overflow,
            "tokens_per_s": None,
            "batch_fp": fingerprint,
            "consumed_samples": self.step * self.B,
            "time": time.time(),
        }
        self._pending.append((record, t0, tokens.shape[1] - 1))
        if len(self._pending) >= (self.run.options.read_stats_every if self.deferred else 1):
            self.settle()
        return record

    def settle(self) -> list[dict]:
        """Finish the pending steps' records: read their device values in one transfer, average
        the losses over ranks, count their updates (deferred stats). Returns them."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        if self.deferred:
            values = torch.stack([torch.stack([r["loss"], r["grad_norm"].double(), r["skipped"].double(), r["lr"]])
                                  for r, _, _ in pending]).tolist()  # (steps, 4): the one host sync
        else:
            values = [(float(r["loss"]), r["grad_norm"], r["skipped"], r["lr"]) for r, _, _ in pending]
        now = time.perf_counter()
        span = now - max(pending[0][1], self._last_settle)  # device time of these steps (they ran back to back)
        tokens = sum(self.B * seq for _, _, seq in pending)
        for (record, _, _), (loss, norm, skipped, lr) in zip(pending, values):
            skipped = bool(skipped)
            if self.deferred:
                self.updates += not skipped
                self.scaler.update(skipped)
            record.update(loss=self.ctx.mean(loss), lr=lr, grad_norm=None if skipped else norm, skipped=skipped,
                          tokens_per_s=tokens / span)
        self._last_settle = now
        if self.deferred:  # a float again, as checkpoints store it (the next step sets its own)
            set_lr(self.optimizer, pending[-1][0]["lr"])
        self._settled += [r for r, _, _ in pending]
        return [r for r, _, _ in pending]

    def _log_settled(self, bar=None) -> dict | None:
        """Log the finished records (metrics.jsonl, progress bar) in order; returns the last."""
        last = None
        while self._settled:
            last = self._settled.pop(0)
            if self.log is not None:
                self.log.log_step(last)
            ckpt.crash_point("step", last["step"])  # test hook: die after logging, before any checkpoint
            if bar is not None:  # the postfix first: a plain progress line prints on update
                speed = f", {last['tokens_per_s']:,.0f} tokens/s" if last.get("tokens_per_s") else ""
                bar.set_postfix_str(f"{self.run.member.name} step {last['step']} loss {last['loss']:.3f}{speed}",
                                    refresh=False)
                bar.update(1)
        return last

    def _eager(self):
        """The plain model inside (checkpoint-time analyses), when the step is compiled."""
        return self.compiled.eager() if self.compiled is not None else contextlib.nullcontext()

    # -- checkpoints and their callbacks ---------------------------------------------------
    def _optimizer_format(self, preempted: bool) -> str:
        """How this checkpoint keeps the optimizer state (see ckpt.OPTIMIZER_FORMATS)."""
        if not self.optimizer.state:
            return "empty"  # saved before any update: a fresh optimizer is exact (and AdamW's step stays 0)
        if not preempted and self.step in self.ckpt_index and self.step not in self.optimizer_steps:
            return "omitted"  # train.optimizer_state_every
        return "sharded" if self.fsdp else "full"

    def save(self, preempted: str | None = None) -> None:
        """Write step{N}/: rank 0 writes it, except under FSDP, where every rank gathers the HF
        weights one tensor at a time (rank 0 writes them) and writes its own shard of the
        optimizer state; nothing is gathered whole. Then every rank runs the checkpoint
        callbacks (skipped for an off-schedule stop, to exit fast)."""
        fmt = self._optimizer_format(preempted is not None)
        optim_state = {"param_groups": [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]}
        if fmt == "full":
            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            optim_state = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        write_shared = self._shared_writer(fmt)
        if self.ctx.is_main:
            rng_tensors, rng_scalars = ckpt.capture_rng()
            extra = {"scheduler_step": self.updates, "member": self.run.member.name,
                     "global_batch": self.B, "seq_len": self.spec.data.seq_len}
            if preempted:
                extra["preempted"] = preempted
            state = ckpt.TrainingState(
                step=self.step, consumed_samples=self.step * self.B, optimizer=optim_state,
                scaler=self.scaler.state_dict(), rng_tensors=rng_tensors, rng_scalars=rng_scalars,
                extra=extra, optimizer_format=fmt,
                gradients=self.gradients,
            )
            with explain_disk_full(self.run.member_dir, self.step, unwrap(self.model), self.run.tokenizer):
                ckpt.save_checkpoint(self.run.member_dir, self.step, state=state,
                                     write_hf=lambda tmp: write_shared(self.ctx.broadcast_object(str(tmp)) if self.fsdp else tmp))
            if fmt != "omitted":
                for step in ckpt.remove_preemption_checkpoints(self.run.member_dir, self.ckpt_steps, self.step):
                    print(f"[{self.run.member.name}] removed step{step}, written on a stop signal: step{self.step} supersedes it")
        elif self.fsdp:
            write_shared(self.ctx.broadcast_object(None))
        self.gradients = None
        self.ctx.barrier()
        if preempted is None or self.step in self.ckpt_index:
            with self._eager():
                self.checkpoint_saved()

    def checkpoint_saved(self) -> None:
        """Tell every callback that step{N} is written (every rank calls them, so sharded models
        work); rank 0 logs the scalars they return to evals.jsonl (and TensorBoard)."""
        if not self.run.callbacks:
            return
        saved = CheckpointSaved(member=self.run.member.name, step=self.step,
                                path=self.run.member_dir / layout.step_dir_name(self.step),
                                model=self.model if self.fsdp else unwrap(self.model), device=self.device,
                                autocast=self.autocast_dtype, micro_batch=self.micro, is_main=self.ctx.is_main)
        values, reported = {}, False
        for callback in self.run.callbacks:
            out = callback.post_checkpoint_saved(saved)
            if out is not None:
                values.update(out)
                reported = True
        if reported and self.log is not None:
            self.log.log_eval({"step": self.step, **values})

    def _callbacks_pending(self, step: int) -> bool:
        """A crash between a checkpoint and its callbacks leaves their work undone: redo on resume."""
        return any(callback.pending(self.run.member.name, step) for callback in self.run.callbacks)

    def _shared_writer(self, fmt: str) -> Callable[[str | Path], str | None]:
        """Writes into the checkpoint's temporary folder what needs every rank under FSDP: the HF
        weights (DTensor shards gathered per tensor) and the sharded optimizer state (DCP).
        Elsewhere rank 0 alone calls it and the HF files come from the unwrapped model."""
        model = unwrap(self.model)

        def write(folder: str | Path) -> str | None:
            folder = Path(folder)
            digest = write_pretrained(model, folder, tokenizer=self.run.tokenizer,
                                      state=self.model.state_dict() if self.fsdp else None,
                                      max_shard_bytes=self.spec.checkpoints.max_shard_bytes, writer=self.ctx.is_main)
            if fmt == "sharded":
                import torch.distributed.checkpoint as dcp

                osd = get_optimizer_state_dict(self.model, self.optimizer)  # DTensor shards, no gather
                dcp.save({"optimizer": osd}, checkpoint_id=str(folder / "training_state" / "optimizer"))
            return digest

        return write

    # -- the loop --------------------------------------------------------------------------
    def run_loop(self, bar=None, stop: StopSignal | None = None) -> dict:
        """Train from the resumed step to train.iters; returns a small summary.

        On SIGTERM/SIGINT (caught by `stop`, or by a StopSignal of its own) the update in
        progress completes, a resumable checkpoint of that step is written, and
        TrainingInterrupted is raised (see preempt.py); a signal during the last update lets
        the member finish normally."""
        with contextlib.ExitStack() as stack:
            stop = stop if stop is not None else stack.enter_context(StopSignal())
            start = self.setup()
            stack.callback(lambda: self.log is not None and self.log.close())
            iters = self.spec.train.iters
            if start == 0 and 0 in self.ckpt_steps and not (self.run.member_dir / "step0").is_dir():
                self.save()
            elif start in self.ckpt_index and self._callbacks_pending(start):
                with self._eager():
                    self.checkpoint_saved()
            last = None
            for n in range(start, iters):
                self.train_step(n)
                last = self._log_settled(bar) or last  # with deferred stats: the previous step's record
                if self.step < iters and self.ctx.any(stop.signum is not None):
                    signum = self.ctx.broadcast_object(stop.signum or signal.SIGTERM)
                    self.settle()
                    self._log_settled(bar)
                    self.save(preempted=signal.Signals(signum).name)
                    raise TrainingInterrupted(signum, self.run.member.name, self.step)
                if self.step in self.ckpt_index or self.step == iters:
                    self.settle()  # a checkpoint holds the update count: read the last step first
                    last = self._log_settled(bar) or last
                if self.step in self.ckpt_index:
                    self.save()
        return {"member": self.run.member.name, "resumed_from": start, "final_step": self.step,
                "final_loss": None if last is None else last["loss"]}
