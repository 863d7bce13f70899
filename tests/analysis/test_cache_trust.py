"""Cached results are trusted only while the checkpoint's files still match its manifest: a cheap
check (sizes, and a re-hash of files modified after the manifest) before a unit is skipped."""
from __future__ import annotations

import pytest

from pythia import layout
from pythia.analysis.runner import run_analyses
from pythia.cli import main
from pythia.run import open_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MEMBER = "d32-l2-seed1"


def _analyze(root):
    return run_analyses(open_run(root), "val_loss", members=[MEMBER], steps="10,20", device="cpu")


def test_a_changed_checkpoint_is_named_instead_of_reported_up_to_date(demo_copy, monkeypatch, capsys):
    first = _analyze(demo_copy)
    assert first.ok and len(first.computed) + len(first.cached) == 2

    hashed = []
    real = layout.sha256_file
    monkeypatch.setattr(layout, "sha256_file", lambda p, *a, **k: hashed.append(p) or real(p, *a, **k))
    again = _analyze(demo_copy)
    assert again.ok and len(again.cached) == 2 and not again.computed
    assert hashed == []  # unchanged files are not re-hashed: the check reads sizes and times only

    weights = demo_copy / "run" / MEMBER / "step20" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-100])  # truncated
    broken = _analyze(demo_copy)
    assert not broken.ok and len(broken.cached) == 1 and not broken.computed
    (message,) = broken.failed
    assert f"{MEMBER}/step20" in message and str(weights) in message and "truncated" in message
    assert "pythia verify" in message and "--force" in message
    assert main(["analyze", str(demo_copy), "val_loss", "--members", MEMBER, "--steps", "20", "--no-progress"]) == 1
    assert str(weights) in capsys.readouterr().out

    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, new bytes, a later mtime
    weights.write_bytes(bytes(flipped))
    (message,) = _analyze(demo_copy).failed
    assert str(weights) in message and "modified after" in message
    forced = run_analyses(open_run(demo_copy), "val_loss", members=[MEMBER], steps="20", device="cpu", force=True)
    assert not forced.ok and "fails its manifest" in forced.failed[0]  # --force: the full hash check

    hashed.clear()
    weights.write_bytes(original)  # restored: a later mtime, the recorded bytes
    restored = _analyze(demo_copy)
    assert restored.ok and len(restored.cached) == 2
    assert hashed == [weights]  # only the file touched after its manifest is re-hashed
