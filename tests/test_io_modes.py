"""Every output file follows the umask, including those whose writer makes them private
(mkstemp, mkdtemp and safetensors create 0600/0700)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pythia.io import atomic_dir, atomic_path, write_text_atomic


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    before = os.umask(request.param)
    yield request.param
    os.umask(before)


def modes_below(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


def assert_umask_modes(root: Path, mask: int) -> None:
    """Files 0666 & ~mask, folders 0777 & ~mask: what a plain open()/mkdir() makes."""
    for rel, mode in modes_below(root).items():
        want = (0o777 if (root / rel).is_dir() else 0o666) & ~mask
        assert mode == want, f"{rel}: mode {mode:o}, umask {mask:03o} gives {want:o}"


def test_safetensors_alone_is_private(tmp_path, umask):
    """The problem being fixed: without the helpers, safetensors' file is 0600 whatever the umask."""
    save_file({"a": torch.zeros(2)}, str(tmp_path / "raw.safetensors"))
    assert stat.S_IMODE((tmp_path / "raw.safetensors").stat().st_mode) == 0o600


def test_atomic_helpers_follow_umask(tmp_path, umask):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_path(out / "weights.safetensors") as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    with atomic_dir(out / "step1") as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp / "model.safetensors"))
        (tmp / "training_state").mkdir(mode=0o700)
        save_file({"b": torch.ones(2)}, str(tmp / "training_state" / "optimizer.safetensors"))
        (tmp / "config.json").write_text("{}")
    write_text_atomic(out / "note.txt", "hello\n")
    assert set(modes_below(out)) == {"weights.safetensors", "step1", "step1/model.safetensors", "step1/config.json",
                                     "step1/training_state", "step1/training_state/optimizer.safetensors", "note.txt"}
    assert_umask_modes(out, umask)


def test_executable_files_stay_executable(tmp_path, umask):
    with atomic_dir(tmp_path / "bin") as tmp:
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        (tmp / "run.sh").chmod(0o700)
    assert stat.S_IMODE((tmp_path / "bin" / "run.sh").stat().st_mode) == 0o777 & ~umask


def test_save_pretrained_follows_umask(tmp_path, umask):
    from pythia.config import custom_config
    from pythia.hf import save_pretrained
    from pythia.model import GPTNeoX

    model = GPTNeoX(custom_config(num_layers=1, hidden_size=32, num_heads=4, vocab_size=128))
    save_pretrained(model, tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert_umask_modes(tmp_path, umask)
