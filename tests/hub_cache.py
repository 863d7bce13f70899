"""Lay out checkpoints as a local Hugging Face Hub cache, the way `huggingface-cli download
REPO --revision stepN` leaves real Pythia checkpoints: models--ORG--NAME/refs/stepN holds a
commit sha, snapshots/SHA/ holds the files (blobs are not needed for reading)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def add_revision(cache: Path, repo_id: str, revision: str, folder: Path) -> Path:
    """Copy the HF files of `folder` in as `repo_id@revision`; returns the snapshot folder."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    sha = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True, exist_ok=True)
    for name in HF_FILES:
        if (Path(folder) / name).is_file():
            shutil.copy2(Path(folder) / name, snap / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(sha)
    return snap


def hub_cache_from_member(cache: Path, member_dir: Path, repo_id: str) -> str:
    """Every step{N} of a member folder as revision stepN of `repo_id`; returns the repo id."""
    for step_dir in sorted(Path(member_dir).glob("step*")):
        if (step_dir / "config.json").is_file():
            add_revision(cache, repo_id, step_dir.name, step_dir)
    return repo_id


def hub_run_on_preshuffled(member, cache: Path, repo_id: str, tmp_path: Path, monkeypatch, results: str = "res"):
    """`repo_id` from the cache opened as a Hub run over `member`'s training data exported in
    EleutherAI's preshuffled layout (item k = position k), as real Pythia checkpoints are read
    with the preshuffled Pile; the run's shape (batch, iters, sequence) is `member`'s."""
    from pythia.data.preshuffle import export_preshuffled
    from pythia.run import open_run

    pre = Path(tmp_path) / "pre" / "document"
    export_preshuffled(member.order(), pre, num_positions=member.train_iters * member.global_batch, progress=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub = open_run(repo_id, data=str(pre), results_dir=Path(tmp_path) / results)
    hub.hub_batch, hub.hub_iters, hub.hub_seq_len = member.global_batch, member.train_iters, member.seq_len
    return hub
