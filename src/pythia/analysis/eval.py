"""`eval`: lm-evaluation-harness benchmarks at every checkpoint, offline, with our model.

    pythia analyze RUN eval --tasks T1,T2 [--include-path DIR] [--num-fewshot k] [--limit n]

Each checkpoint is loaded once for all tasks; lm-eval (0.4) builds the requests and the
metrics, our model and generator (`pythia.evals.lm.PythiaLM`, lm-eval model `pythia`) answer
them with the same numbers as lm-eval's `hf` model. Rows: task ("arc_easy", or
"arc_easy@5shot" with shots), metric ("acc", "perplexity", ...), value, stderr. Per task and
checkpoint the lm-eval output, its key and the per-item outcomes are kept in
RESULTS/artifacts/eval/{member}/stepN/ (see pythia.evals.sweep), so adding a task to the
list recomputes only that task. Without --tasks, a `pythia demo` output evaluates the tasks
its demo wrote (DEMO/tasks, made by pythia.evals.demo_tasks.build_demo_tasks).
"""
from __future__ import annotations

from pathlib import Path

from .base import Analysis, AnalysisError, Option, Row, register


def demo_task_dir(run) -> Path | None:
    """DEMO/tasks when `run` is a demo's run folder and its tasks were built."""
    if run.root is None:
        return None
    tasks = run.root.parent / "tasks"
    return tasks if (run.root.parent / "demo.json").is_file() and tasks.is_dir() else None


@register
class Eval(Analysis):
    name = "eval"
    summary = "lm-evaluation-harness benchmarks (offline task YAMLs) with the same numbers as lm-eval's hf model"
    version = 1
    options = (
        Option("tasks", str, None, "comma-separated lm-eval tasks or groups (default for a demo: its tasks)"),
        Option("include_path", str, None, "folder(s) of task YAMLs, comma-separated (a demo's DEMO/tasks is added)"),
        Option("num_fewshot", int, None, "examples in the prompt (default: each task's own, usually 0)"),
        Option("limit", int, None, "score only the first N documents of each task (a quick look)"),
        Option("batch_size", int, 16, "requests per forward pass / generation batch (results do not depend on it)"),
        Option("bootstrap_iters", int, 1000, "bootstrap draws for stderrs that need them (perplexity); 0 = none"),
    )

    def cache_key(self, digest):
        key = super().cache_key(digest)
        key["options"].pop("batch_size", None)  # numbers are the same for every batch size
        return key

    def _task_args(self, run) -> tuple[list[str], list[str]]:
        paths = [p for p in (self.opts["include_path"] or "").split(",") if p.strip()]
        demo = demo_task_dir(run)
        if demo is not None and str(demo) not in paths:
            paths.insert(0, str(demo))  # first: a task of the user's paths overrides a demo task
        if self.opts["tasks"]:
            return [t.strip() for t in self.opts["tasks"].split(",") if t.strip()], paths
        if demo is not None:
            from ..evals.demo_tasks import DEMO_TASKS

            return [t for t in DEMO_TASKS if (demo / f"{t}.yaml").is_file()], paths
        raise AnalysisError("eval: name the tasks, e.g. --tasks pythia_demo_lastword,arc_easy "
                            "(task YAMLs of your own: --include-path DIR)")

    def check(self, run, members) -> None:
        """Load every task now (offline): a bad name, YAML or missing dataset stops the sweep
        before any checkpoint is read."""
        from ..evals.sweep import prepare_tasks
        from ..evals.tasks import TaskError, load_tasks

        for name in ("limit", "batch_size"):
            if self.opts[name] is not None and self.opts[name] < 1:
                raise AnalysisError(f"eval: --{name.replace('_', '-')} must be >= 1, got {self.opts[name]}")
        if (self.opts["num_fewshot"] or 0) < 0 or self.opts["bootstrap_iters"] < 0:
            raise AnalysisError("eval: --num-fewshot and --bootstrap-iters must be >= 0")
        tasks, paths = self._task_args(run)
        try:
            self._specs = load_tasks(tasks, paths)
        except TaskError as exc:
            raise AnalysisError(f"eval: {exc}") from None
        prepare_tasks(self._specs, self.opts["num_fewshot"])

    def compute(self, ctx) -> list[Row]:
        from ..evals.sweep import checkpoint_eval

        if not hasattr(self, "_specs"):
            self.check(ctx.run, [ctx.member])
        return checkpoint_eval(ctx, self._specs, self.opts, self.version)
