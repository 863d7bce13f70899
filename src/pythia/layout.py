"""A run on disk: the one module that knows where things are and how a checkpoint proves itself.

Every reader and writer of a run agrees on these rules; nothing else spells them out:

    RUN/{member}/step{N}/            one checkpoint (`step_dir_name`, `parse_step`); complete once it
                                     holds manifest.json (`complete_checkpoints`)
    RUN/{member}/step{N}/manifest.json
        {"format": MANIFEST_FORMAT, "step", "weights_digest", "files": {relpath: {sha256, bytes}}}
        (`write_manifest`, `check_manifest`, `recorded_digest`)
    weights_digest                   sha256 over (name, dtype, shape, bytes) of the model tensors in
                                     name order (`WeightsDigest`, `weights_digest`,
                                     `digest_of_checkpoint`): equal digests = identical weights
    *.safetensors at the top of a step folder: the model weights (`model_files`)

Hub repos are read from the local Hugging Face cache, never the network (`hub_cache_dir`,
`hub_repo_dir`, `hub_revisions`, `resolve_hub_cache`):
CACHE/models--ORG--NAME/refs/REV holds a commit sha, the files are under snapshots/SHA/
(huggingface_hub's cache layout, https://huggingface.co/docs/huggingface_hub/guides/manage-cache).

torch and safetensors are imported only by the functions that hash tensors, so opening a run
stays light.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from .io import sha256_file

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "pythia-checkpoint/1"

__all__ = ["MANIFEST", "MANIFEST_FORMAT", "WeightsDigest", "check_manifest", "complete_checkpoints",
           "digest_of_checkpoint", "hub_cache_dir", "hub_repo_dir", "hub_revisions", "model_files", "parse_step",
           "recorded_digest", "resolve_hub_cache", "step_dir_name", "weights_digest", "write_manifest"]


# -- step folders ----------------------------------------------------------------------------


def step_dir_name(step: int) -> str:
    """`step{N}`: the folder of the checkpoint written after N updates (the Hub's branch name too)."""
    return f"step{step}"


def parse_step(name: str) -> int | None:
    """`"step128"` -> 128; any other name -> None."""
    if name.startswith("step") and name[4:].isdigit():
        return int(name[4:])
    return None


def complete_checkpoints(member_dir: Path) -> list[int]:
    """Steps with a step{N}/manifest.json, ascending (files are checked on load, not here)."""
    member_dir = Path(member_dir)
    if not member_dir.is_dir():
        return []
    steps = []
    for p in member_dir.iterdir():
        n = parse_step(p.name)
        if n is not None and p.is_dir() and (p / MANIFEST).is_file():
            steps.append(n)
    return sorted(steps)


def model_files(step_dir: Path) -> list[Path]:
    """The model weights of a step folder: its top-level *.safetensors, sorted."""
    return sorted(p for p in Path(step_dir).glob("*.safetensors"))


# -- digests ---------------------------------------------------------------------------------


class WeightsDigest:
    """sha256 over (name, dtype, shape, bytes) of tensors fed in name order: the checkpoint
    manifest's `weights_digest`, computed while the weights stream to disk."""

    def __init__(self):
        import hashlib

        self._h = hashlib.sha256()

    def update(self, name: str, t: torch.Tensor) -> None:
        import torch

        t = t.detach().cpu().contiguous()
        self._h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        self._h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order."""
    h = WeightsDigest()
    for name in sorted(state_dict):
        h.update(name, state_dict[name])
    return h.hexdigest()


def digest_of_checkpoint(step_dir: Path) -> str:
    """weights_digest computed from the files on disk (reads every model tensor)."""
    from safetensors import safe_open

    tensors = {}
    for f in model_files(step_dir):
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():
                tensors[key] = sf.get_tensor(key)
    return weights_digest(tensors)


# -- manifests -------------------------------------------------------------------------------


def write_manifest(step_dir: Path, step: int, digest: str) -> dict:
    """Hash every file of the folder into its manifest.json (written last: it marks the step complete)."""
    files = {}
    for p in sorted(Path(step_dir).rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(step_dir).as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "step": step, "weights_digest": digest, "files": files}
    (Path(step_dir) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check_manifest(step_dir: Path, hashed: dict[str, str] | None = None) -> list[str]:
    """Problems with one checkpoint folder (empty list = every file present and hashed right).

    `hashed` maps relative paths to the sha256 of bytes the caller has already read (a loader
    that hashed the weights while reading them): those files are not read a second time."""
    step_dir = Path(step_dir)
    hashed = hashed or {}
    path = step_dir / MANIFEST
    if not path.is_file():
        return [f"{step_dir}: manifest.json is missing"]
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{path}: unreadable manifest ({exc})"]
    problems = []
    for rel, entry in sorted(files.items()):
        p = step_dir / rel
        if not p.is_file():
            problems.append(f"{step_dir.name}/{rel}: listed in manifest but missing")
        elif p.stat().st_size != entry.get("bytes"):
            problems.append(f"{step_dir.name}/{rel}: size {p.stat().st_size} != manifest {entry.get('bytes')}")
        elif (hashed[rel] if rel in hashed else sha256_file(p)) != entry.get("sha256"):
            problems.append(f"{step_dir.name}/{rel}: sha256 mismatch (file changed or corrupted)")
    for p in sorted(step_dir.rglob("*")):
        rel = p.relative_to(step_dir).as_posix()
        if p.is_file() and rel != MANIFEST and rel not in files:
            problems.append(f"{step_dir.name}/{rel}: file not listed in manifest")
    return problems


# A file written before its manifest may carry an mtime up to this much later (coarse
# filesystem clocks, a copy that did not keep times); only a later one is re-hashed.
MTIME_SLACK_S = 2.0


def quick_check_manifest(step_dir: Path) -> list[str]:
    """The cheap part of check_manifest, for trusting cached results: every listed file present
    with its recorded size, and no file modified after the manifest was written (the manifest
    is written last); only a file that was is re-hashed. Catches truncation, deletion and
    in-place edits without reading unchanged files. Empty list = nothing seen wrong."""
    step_dir = Path(step_dir)
    path = step_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        written = path.stat().st_mtime
    except FileNotFoundError:
        return [f"{step_dir}: manifest.json is missing"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"{path}: unreadable manifest ({exc})"]
    problems = []
    for rel, entry in sorted(files.items()):
        p = step_dir / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            problems.append(f"{step_dir / rel}: listed in the manifest but missing")
            continue
        if st.st_size != entry.get("bytes"):
            problems.append(f"{step_dir / rel}: {st.st_size} bytes, the manifest says {entry.get('bytes')} "
                            f"(truncated or rewritten)")
        elif st.st_mtime > written + MTIME_SLACK_S and sha256_file(p) != entry.get("sha256"):
            problems.append(f"{step_dir / rel}: modified after the checkpoint was written (sha256 differs)")
    return problems


def recorded_digest(step_dir: Path) -> str | None:
    """The manifest's `weights_digest`; None without a manifest. An unreadable manifest raises
    ValueError naming it."""
    path = Path(step_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["weights_digest"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({exc})") from None


# -- the local Hugging Face cache ------------------------------------------------------------


def hub_cache_dir() -> Path:
    """$HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub (~/.cache/huggingface/hub),
    read at call time so tests and users can point it anywhere."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_repo_dir(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """CACHE/models--ORG--NAME of a repo id (whether or not it exists)."""
    cache = Path(cache_dir) if cache_dir else hub_cache_dir()
    return cache / ("models--" + repo_id.replace("/", "--"))


def hub_revisions(repo_dir: Path) -> dict[int, Path]:
    """{step: snapshot folder} of the cached `stepN` refs of a repo that hold a config.json."""
    revisions = {}
    for ref in (Path(repo_dir) / "refs").iterdir():
        n = parse_step(ref.name)
        snap = Path(repo_dir) / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if n is not None and (snap / "config.json").is_file():
            revisions[n] = snap
    return revisions


def resolve_hub_cache(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Snapshot folder of `repo_id` at `revision` (branch, tag or commit) in the local HF cache.
    Never touches the network."""
    revision = revision or "main"
    repo_dir = hub_repo_dir(repo_id, cache_dir)
    if not repo_dir.is_dir():
        raise FileNotFoundError(
            f"{repo_id!r} is neither a directory nor in the local Hugging Face cache ({repo_dir} not found; "
            f"download it first with the Hugging Face CLI, e.g. `hf download {repo_id} --revision {revision}`)"
        )
    ref = repo_dir / "refs" / revision
    if ref.is_file():
        sha = ref.read_text(encoding="utf-8").strip()
    elif re.fullmatch(r"[0-9a-f]{40}", revision):
        sha = revision
    else:
        known = sorted(p.name for p in (repo_dir / "refs").glob("*")) if (repo_dir / "refs").is_dir() else []
        raise FileNotFoundError(f"revision {revision!r} of {repo_id!r} is not in the local cache {repo_dir} (cached refs: {known})")
    snapshot = repo_dir / "snapshots" / sha
    if not (snapshot / "config.json").is_file():
        raise FileNotFoundError(f"{snapshot}: cached snapshot of {repo_id}@{revision} has no config.json")
    return snapshot

