"""Finding and loading lm-eval tasks offline, with errors that name the task and its file.

- Offline always: `go_offline()` sets HF_DATASETS_OFFLINE / HF_HUB_OFFLINE (and the already
  imported libraries' flags), so a task whose data is not local fails at once, named, instead
  of waiting on the network; a dataset already in the local Hugging Face cache still loads.
- Fast lookup: include paths are indexed alone first (milliseconds); lm-eval's ~15k built-in
  task YAMLs are indexed (seconds) only when a requested name is not found there.
- Bad input: an unknown name lists the tasks of the include paths, close built-in names and
  the YAML files that do not parse; a task that fails to load or to render its first document
  gives lm-eval's message with the task's YAML file.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import sha256_file

__all__ = ["TaskError", "TaskSpec", "data_files_relative_to_yaml", "go_offline", "load_tasks", "split_paths"]


class TaskError(ValueError):
    """A task that cannot be found or loaded; the message names it and its file."""


def go_offline() -> None:
    """No downloads from here on (datasets and the Hub read only their local caches)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "datasets" in sys.modules:  # flags are read at import: patch them when already imported
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True


def data_files_relative_to_yaml() -> bool:
    """Let lm-eval read a task YAML's relative `dataset_kwargs.data_files` relative to the YAML's
    own folder, so a folder of generated tasks (the demo's, the arithmetic study's) keeps working
    when it is moved. lm-eval resolves them against the current directory (datasets does), which
    makes a task folder usable from one directory only. Installed once per process, around
    lm-eval 0.4's TaskFactory._load_full_config (lm_eval/tasks/_factory.py, which loads each
    task's YAML); a path that does not exist next to the YAML is left as it is. Returns whether
    it is installed (False: an lm-eval without that loader, where only absolute paths work)."""
    try:
        from lm_eval.tasks import _factory
    except ImportError:
        return False
    cls = getattr(_factory, "TaskFactory", None)
    load = getattr(cls, "_load_full_config", None)
    if load is None:
        return False
    if getattr(load, "pythia_relative_data_files", False):
        return True

    def _load_full_config(self, entry, overrides=None):
        cfg = load(self, entry, overrides)
        if getattr(entry, "yaml_path", None) and isinstance(cfg.get("dataset_kwargs"), dict):
            files = cfg["dataset_kwargs"].get("data_files")
            if files is not None:
                cfg["dataset_kwargs"] = {**cfg["dataset_kwargs"],
                                         "data_files": _rebased(files, Path(entry.yaml_path).parent)}
        return cfg

    _load_full_config.pythia_relative_data_files = True
    cls._load_full_config = _load_full_config
    return True


def _rebased(files: Any, folder: Path) -> Any:
    if isinstance(files, str):
        near = folder / files
        return str(near) if not Path(files).is_absolute() and near.exists() else files
    if isinstance(files, list):
        return [_rebased(f, folder) for f in files]
    if isinstance(files, dict):
        return {k: _rebased(v, folder) for k, v in files.items()}
    return files


def split_paths(include_path: Any) -> list[Path]:
    """"a,b" / [a, b] / None -> existing folders (a missing one is an error)."""
    if not include_path:
        return []
    items = include_path.split(",") if isinstance(include_path, str) else list(include_path)
    paths = [Path(str(p).strip()).expanduser().absolute() for p in items if str(p).strip()]
    for p in paths:
        if not p.is_dir():
            raise TaskError(f"--include-path {p}: no such folder")
    return paths


@dataclass
class TaskSpec:
    """One requested name (a task or a group) and what lm-eval loaded for it."""

    name: str
    loaded: dict
    """lm-eval TaskManager.load result: {"tasks": {name: Task}, "groups": {...}, "group_map": {...}}."""
    yaml_path: str | None
    fingerprint: str
    """sha256 of the task configs (data file paths left out) and of the local data files."""


_FULL_INDEX: dict = {}  # include paths -> TaskManager with lm-eval's built-in tasks (slow to index)


def _manager(paths: list[Path], defaults: bool):
    from lm_eval.tasks import TaskManager

    def make():
        return TaskManager(include_path=[str(p) for p in paths] or None, include_defaults=defaults)

    if not defaults:
        return make()
    key = tuple(map(str, paths))
    if key not in _FULL_INDEX:
        _FULL_INDEX[key] = make()
    return _FULL_INDEX[key]


def _yaml_problems(paths: list[Path]) -> list[str]:
    """Include-path YAML files that do not parse (lm-eval's index skips them silently)."""
    import yaml

    class Lenient(yaml.SafeLoader):  # lm-eval YAMLs use tags such as !function
        pass

    Lenient.add_multi_constructor("!", lambda loader, suffix, node: None)
    out = []
    for root in paths:
        for f in sorted(root.rglob("*.yaml")):
            try:
                yaml.load(f.read_text(encoding="utf-8"), Loader=Lenient)
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                out.append(f"{f}: {' '.join(str(exc).split())[:200]}")
    return out


def _unknown(names: list[str], paths: list[Path], local, full) -> TaskError:
    local_names = sorted(local.all_tasks) if local is not None else []
    lines = [f"unknown lm-eval task(s): {', '.join(names)}"]
    lines.append(f"tasks in the include path(s) ({', '.join(map(str, paths)) or 'none given'}): "
                 f"{', '.join(local_names) or 'none'}")
    builtin = [n for n in full.all_tasks if n not in local_names]
    close = sorted({m for n in names for m in difflib.get_close_matches(n, builtin + local_names, n=5, cutoff=0.6)})
    if close:
        lines.append(f"close names: {', '.join(close)}")
    lines.append(f"lm-eval has {len(builtin)} built-in tasks and groups (`lm_eval ls tasks` lists them; "
                 "they need their datasets in the local Hugging Face cache, since evaluation runs offline)")
    lines += [f"not read (bad YAML): {p}" for p in _yaml_problems(paths)]
    return TaskError("\n".join(lines))


def _offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return isinstance(exc, ConnectionError) or any(s in text for s in (
        "OfflineModeIsEnabled", "offline mode", "HF_DATASETS_OFFLINE", "Couldn't reach", "LocalEntryNotFound"))


def _load_one(tm, name: str) -> dict:
    entry = tm.task_index.get(name)
    where = f" ({entry.yaml_path})" if entry is not None and entry.yaml_path else ""
    try:
        loaded = tm.load([name])
        for task in loaded["tasks"].values():
            _render_first(task)
    except TaskError:
        raise
    except Exception as exc:  # noqa: BLE001 - lm-eval raises many types; the message is what matters
        if _offline_error(exc):
            raise TaskError(f"task {name}{where} needs data that is not on this machine ({exc}); evaluation "
                            "runs offline: point the task at local files (dataset_path: json, dataset_kwargs: "
                            "data_files) or put the dataset in the local Hugging Face cache first") from None
        raise TaskError(f"task {name}{where}: {type(exc).__name__}: {exc}") from None
    return loaded


def _render_first(task) -> None:
    """Render the first document's prompt, target and choices: template errors surface now,
    with the task named, instead of in the middle of a sweep."""
    docs = task.eval_docs
    if len(docs) == 0:
        raise TaskError(f"task {task.task_name}: no documents in its evaluation split")
    doc = docs[0]
    task.doc_to_text(doc)
    task.doc_to_target(doc)
    if task.OUTPUT_TYPE == "multiple_choice":
        task.doc_to_choice(doc)


def _fingerprint(loaded: dict) -> str:
    """What a task's numbers depend on besides the model: its config (without local data
    file paths, so a moved folder is not a new task) and the bytes of its local data files."""
    h = hashlib.sha256()
    for name in sorted(loaded["tasks"]):
        config = loaded["tasks"][name].dump_config()
        files = ((config.get("dataset_kwargs") or {}).get("data_files")) or {}
        if isinstance(files, str):
            files = {"": files}
        digests = {}
        for split, f in sorted(files.items()):
            for one in ([f] if isinstance(f, str) else list(f)):
                if Path(one).is_file():
                    digests[f"{split}:{Path(one).name}"] = sha256_file(one)
        config = dict(config, dataset_kwargs={k: v for k, v in (config.get("dataset_kwargs") or {}).items()
                                              if k != "data_files"})
        h.update(json.dumps([name, config, digests], sort_keys=True, default=str).encode())
    h.update(json.dumps(loaded.get("group_map", {}), sort_keys=True).encode())
    return h.hexdigest()[:20]


@contextlib.contextmanager
def quiet_lm_eval():
    """Swallow what lm-eval and datasets print while they load tasks and score: a
    "Generating test split" bar per data file, a request-building bar per task, a
    "bootstrapping for stddev" line and bar per metric (hundreds of lines per checkpoint for
    the arithmetic tasks). The sweep draws its own bar; errors still raise, and logging
    handlers keep the stream they were made with, so lm-eval's warnings are still shown."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def load_tasks(names: list[str], include_path: Any = None) -> list[TaskSpec]:
    """Load lm-eval tasks/groups by name, offline; raises TaskError naming what is wrong."""
    go_offline()
    data_files_relative_to_yaml()
    paths = split_paths(include_path)
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise TaskError("no task named (pass --tasks T1,T2)")
    tm = _manager(paths, defaults=False) if paths else None
    if tm is None or any(n not in tm.all_tasks for n in names):
        local, tm = tm, _manager(paths, defaults=True)
        missing = [n for n in names if n not in tm.all_tasks]
        if missing:
            raise _unknown(missing, paths, local, tm)
    specs = []
    for name in names:
        with quiet_lm_eval():
            loaded = _load_one(tm, name)
        entry = tm.task_index.get(name)
        specs.append(TaskSpec(name=name, loaded=loaded, yaml_path=str(entry.yaml_path) if entry and entry.yaml_path
                              else None, fingerprint=_fingerprint(loaded)))
    return specs
