"""Safe on a shared machine: one writer per run, a disk that fills up mid-checkpoint, outputs
that follow the umask, and the disk a run will take (--dry-run) checked against real files."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import SafetensorError

from pythia.cli import main
from pythia.lock import LOCK_NAME, RunLock, read_holder
from pythia.suite import train_suite
from pythia.train import checkpoint as ckpt_mod
from pythia.train.metrics import read_jsonl
from pythia.train.spec import SuiteSpec

from .conftest import REPO, tiny_spec

MEMBER = "tiny-seed1"
STEPS = [0, 1, 2, 4, 8, 10]
_UNIT = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


@pytest.fixture(scope="module")
def reference(datasets, tmp_path_factory):
    """One member trained without interruption, and its spec file. In a fresh interpreter like
    the runs compared with it: bits can differ from a run inside pytest's process."""
    root = tmp_path_factory.mktemp("shared")
    d = tiny_spec(datasets, root / "unused", members=[{"name": "tiny", "num_layers": 2, "hidden_size": 32,
                                                       "num_heads": 4}], seeds=[1])
    spec_path = root / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    p = subprocess.run(_train_cmd(spec_path, root / "ref"), cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return spec_path, root / "ref"


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHIA_TRAIN_CRASH_AT"}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _train_cmd(spec_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pythia.train", str(spec_path), "--out", str(out), "--no-progress"]


def assert_same_run(ref: Path, run: Path) -> None:
    """Every checkpoint byte-identical, logs with the same losses and no duplicate lines."""
    for step in STEPS:
        for rel in ("model.safetensors", "training_state/optimizer.safetensors", "training_state/rng.safetensors"):
            a, b = ref / MEMBER / f"step{step}" / rel, run / MEMBER / f"step{step}" / rel
            assert a.is_file() == b.is_file(), f"step{step}/{rel}"  # step0 holds no optimizer state
            assert not a.is_file() or a.read_bytes() == b.read_bytes(), f"step{step}/{rel}"
    got, want = read_jsonl(run / MEMBER / "metrics.jsonl"), read_jsonl(ref / MEMBER / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 11))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    assert [r["step"] for r in read_jsonl(run / MEMBER / "evals.jsonl")] == STEPS


def step_bytes(step_dir: Path) -> int:
    return sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())


def parse_size(text: str) -> float:
    number, unit = text.split()
    return float(number) * _UNIT[unit]


# ----------------------------------------------------------------------------- one writer per run
def test_second_train_is_refused_naming_the_holder_and_the_first_is_unaffected(reference, tmp_path):
    spec_path, ref = reference
    out = tmp_path / "run"
    first = subprocess.Popen(_train_cmd(spec_path, out), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        while first.poll() is None and read_holder(out / LOCK_NAME).get("pid") != first.pid:
            time.sleep(0.002)
        first.send_signal(signal.SIGSTOP)  # hold the first writer still, mid-run, lock held
        assert read_holder(out / LOCK_NAME).get("pid") == first.pid, "first run ended before it could be paused"
        second = subprocess.run(_train_cmd(spec_path, out), cwd=REPO, env=_env(), capture_output=True, text=True,
                                timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 75, second.stderr[-3000:]
    msg = second.stderr
    assert "Traceback" not in msg and f"{out} is already being written by pythia train" in msg
    assert f"pid {first.pid} on host {socket.gethostname()}" in msg and "since 20" in msg
    assert_same_run(ref, out)
    assert read_holder(out / LOCK_NAME) == {}  # released at the end


def test_read_only_commands_never_lock_and_a_refused_train_touches_nothing(reference, datasets, tmp_path, capsys):
    spec_path, ref = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    partial = run / MEMBER / ".step12.abcd.tmp"  # what a live writer's checkpoint-in-progress looks like
    partial.mkdir()
    suite_mtime = (run / "suite.yaml").stat().st_mtime_ns
    with RunLock(run, "pythia analyze"):  # flock: a second lock, even from this process, is refused
        assert main(["verify", str(run)]) == 0
        assert main(["report", str(run)]) == 0
        assert main(["data", "batch", datasets["train"], "--seq-len", "16", "--train-iters", "10",
                     "--batch-size", "8", "--step", "3"]) == 0
        capsys.readouterr()
        assert main(["train", str(spec_path), "--out", str(run), "--no-progress"]) == 75
        err = capsys.readouterr().err
    assert f"pythia analyze (pid {os.getpid()} on host {socket.gethostname()}" in err
    assert partial.is_dir(), "refused train cleaned up another writer's checkpoint in progress"
    assert (run / "suite.yaml").stat().st_mtime_ns == suite_mtime
    assert (run / "report" / "results.csv").is_file()


# ----------------------------------------------------------------------------- a full disk
def test_disk_full_mid_checkpoint_leaves_nothing_partial_and_resumes_exactly(reference, tmp_path, monkeypatch, capsys):
    spec_path, ref = reference
    run = tmp_path / "run"
    real_save = ckpt_mod.save_file

    def fills_the_disk(tensors, filename, metadata=None):
        """step8's optimizer file: half of it reaches the disk, then the disk is full (raised the
        way safetensors reports it: its own exception type, the errno only in the text)."""
        real_save(tensors, filename, metadata=metadata)
        if f"{os.sep}.step8." in filename and filename.endswith("optimizer.safetensors"):
            os.truncate(filename, os.path.getsize(filename) // 2)
            raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(errno.ENOSPC)} "
                                  f"(os error {errno.ENOSPC})")

    monkeypatch.setattr(ckpt_mod, "save_file", fills_the_disk)
    assert main(["train", str(spec_path), "--out", str(run), "--no-progress"]) == 74
    err = capsys.readouterr().err
    member_dir = run / MEMBER
    assert "Traceback" not in err
    assert f"no space left on device while writing checkpoint step8 into {member_dir}" in err
    assert "re-run the same command: it resumes from step4" in err
    need = parse_size(re.search(r"a checkpoint needs about ([\d.]+ [KMG]?B)", err).group(1))
    assert need == pytest.approx(step_bytes(ref / MEMBER / "step8"), rel=5e-3)
    assert sorted(p.name for p in member_dir.iterdir() if "step" in p.name) == ["step0", "step1", "step2", "step4"]

    monkeypatch.undo()  # space freed
    assert main(["train", str(spec_path), "--out", str(run), "--no-progress"]) == 0
    assert_same_run(ref, run)
    assert main(["verify", str(run)]) == 0


def test_only_full_disk_errors_are_translated(tmp_path):
    from pythia.config import custom_config
    from pythia.train.disk import DiskFullError, explain_disk_full, meta_model

    model = meta_model(custom_config(num_layers=1, hidden_size=32, num_heads=4, vocab_size=128))
    with pytest.raises(DiskFullError, match=f"disk quota exceeded while writing checkpoint step3 into {tmp_path}"):
        with explain_disk_full(tmp_path, 3, model):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    with pytest.raises(PermissionError):
        with explain_disk_full(tmp_path, 3, model):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    with pytest.raises(SafetensorError, match=f"os error {errno.EACCES}"):
        with explain_disk_full(tmp_path, 3, model):
            raise SafetensorError(f"I/O error: Permission denied (os error {errno.EACCES})")


def _can_mount_tmpfs() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        try:
            return subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=1m", "none", d],
                                  capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


_FULL_FS_SCRIPT = """
mount -t tmpfs -o size=8m none "$MNT" || exit 90
head -c 6500000 /dev/zero > "$MNT/ballast"           # ~1.5 MB left: step0 and step1 fit, step2 does not
"$@" > "$OUT/full.stdout" 2> "$OUT/full.stderr"; echo $? > "$OUT/full.rc"
ls -A "$MNT/run/tiny-seed1" > "$OUT/full.ls"
rm "$MNT/ballast"                                   # space freed
"$@" > "$OUT/resume.stdout" 2> "$OUT/resume.stderr"; echo $? > "$OUT/resume.rc"
cp -a "$MNT/run" "$OUT/run"
"""


@pytest.mark.slow  # three runs in fresh interpreters
@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs user+mount namespaces (unshare -rm) for a small tmpfs")
def test_real_full_filesystem(reference, tmp_path):
    """The same, on a real 8 MB tmpfs that fills up: safetensors itself gets ENOSPC."""
    spec_path, ref = reference
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir(), out.mkdir()
    env = {**_env(), "MNT": str(mnt), "OUT": str(out)}
    p = subprocess.run(["unshare", "-rm", "sh", "-c", _FULL_FS_SCRIPT, "sh", *_train_cmd(spec_path, mnt / "run")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    err = (out / "full.stderr").read_text()
    assert (out / "full.rc").read_text().strip() == "74", err[-3000:]
    assert "Traceback" not in err and "no space left on device while writing checkpoint step2" in err
    assert "it resumes from step1" in err
    assert sorted((out / "full.ls").read_text().split()) == ["evals.jsonl", "metrics.jsonl", "step0", "step1"]
    assert (out / "resume.rc").read_text().strip() == "0", (out / "resume.stderr").read_text()[-3000:]
    assert_same_run(ref, out / "run")


# ----------------------------------------------------------------------------- readable outputs
@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_every_output_follows_the_umask(datasets, tmp_path, umask):
    from pythia.report import build_report

    d = tiny_spec(datasets, tmp_path / "run", train={"iters": 2},
                  members=[{"name": "tiny", "num_layers": 1, "hidden_size": 32, "num_heads": 4}], seeds=[1])
    before = os.umask(umask)
    try:
        run = train_suite(SuiteSpec.from_dict(d), progress=False)
        build_report(run)
    finally:
        os.umask(before)
    paths = sorted(run.rglob("*"))
    names = {p.relative_to(run).as_posix() for p in paths}
    assert {LOCK_NAME, "suite.yaml", f"{MEMBER}/step2/model.safetensors", "report/results.csv",
            f"{MEMBER}/step2/training_state/optimizer.safetensors", f"{MEMBER}/metrics.jsonl"} <= names
    for p in paths:
        mode, want = stat.S_IMODE(p.stat().st_mode), (0o777 if p.is_dir() else 0o666) & ~umask
        assert mode == want, f"{p.relative_to(run)}: mode {mode:o}, umask {umask:03o} gives {want:o}"


# ----------------------------------------------------------------------------- disk a run takes
def _dataset_with_tokenizer(datasets: dict, root: Path) -> str:
    """The training set, plus the manifest entry that makes every checkpoint carry a tokenizer."""
    from tokenizers import Tokenizer, models

    prefix = root / "train"
    for ext in (".bin", ".idx"):
        shutil.copy(datasets["train"] + ext, str(prefix) + ext)
    tok = root / "tokenizer.json"
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0")).save(str(tok))
    (root / "train.manifest.json").write_text(json.dumps({"tokenizer": {"path": str(tok)}}))
    return str(prefix)


def test_dry_run_disk_matches_the_files_written(datasets, tmp_path, capsys):
    d = tiny_spec(datasets, tmp_path / "run", train={"iters": 4}, seeds=[1])
    d["data"]["train"] = _dataset_with_tokenizer(datasets, tmp_path)
    spec_path = tmp_path / "suite.yaml"
    spec_path.write_text(yaml.safe_dump(d))
    assert main(["train", str(spec_path), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # a dry run writes nothing, not even a lock
    train_suite(SuiteSpec.from_dict(d), progress=False)
    run = tmp_path / "run"
    assert (run / MEMBER / "step4" / "tokenizer.json").is_file()
    full = {m: sum(step_bytes(run / m / f"step{s}") for s in (0, 1, 2, 4)) for m in ("tiny-seed1", "wide-seed1")}
    for m in full:  # step0 holds no optimizer state (nothing to save before the first update)
        line = re.search(rf"^{m}\s+([\d.]+ [KMG]?B) \(3 x [\d.]+ [KMG]?B with optimizer state \+ 1 x "
                         rf"[\d.]+ [KMG]?B weights only\)$", text, re.M)
        assert line, text
        assert parse_size(line.group(1)) == pytest.approx(full[m], rel=1e-2)
    total = re.search(r"^# whole run: ([\d.]+ [KMG]?B) as scheduled", text, re.M)
    assert parse_size(total.group(1)) == pytest.approx(sum(full.values()), rel=1e-2)


@pytest.mark.slow  # two ranks start up: about 15 s on 2 cores
def test_torchrun_job_on_a_locked_run_stops_on_every_rank(reference, tmp_path):
    """Rank 0 alone takes the lock; a refusal reaches rank 1 too, which would otherwise wait at
    the first barrier for a rank 0 that has left."""
    spec_path, _ = reference
    out = tmp_path / "run"
    with RunLock(out, "pythia analyze"):
        p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            *_train_cmd(spec_path, out)[1:]], cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=240)
    assert p.returncode != 0
    log = p.stdout + p.stderr
    assert log.count(f"{out} is already being written by pythia analyze (pid {os.getpid()}") == 2, log[-3000:]
    assert sorted(q.name for q in out.iterdir()) == [LOCK_NAME]  # neither rank wrote anything
