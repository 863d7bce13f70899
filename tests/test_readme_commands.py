"""The README's commands, run as a user runs them: from a folder laid out like the repository
after `make demo`, on the quick demo.

Taken from README.md itself: every command of its ```bash blocks, every `pythia ... demo-output
...` command quoted in its text (the studies, one by one) and its ```python blocks. The quick
demo stands in for the full one, so the full demo's member names, steps and sizes are mapped to
the quick demo's (MEMBERS, STEPS, FLAGS below) and `EleutherAI/pythia-70m` to the quick demo's
member laid out as a Hub cache. Not run: `make ...` lines (they install the package and run this
very test suite) and the block marked "not run here" (the Pile's hundreds of GB).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import shutil
from pathlib import Path

import pytest

from pythia.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

MEMBERS = {"d64-l2": "d32-l2", "d96-l3": "d64-l2", "d128-l3": "d64-l2"}  # the full demo's shapes -> quick's
STEPS = {0: 0, 1: 1, 2: 2, 4: 4, 8: 8, 16: 10, 32: 10, 48: 10, 64: 10, 100: 10, 128: 10, 192: 20, 256: 20,
         1000: 10, 143000: 20, 10: 10, 20: 20}  # full demo (and Hub) steps -> the quick demo's 0, 1, 2, 4, 8, 10, 20
FLAGS = {  # flag -> value on the quick demo (its shapes, and cheaper settings of the same commands)
    "--seq-len": "64", "--train-iters": "20", "--batch-size": "8", "--position": "100", "--document": "5",
    "--positions": "0:160", "--vocab-size": "512", "--tuned-steps": "10", "--limit": "4",
}
STEP_FLAGS = ("--steps", "--step", "--convergence-steps")
HUB_REPO = "EleutherAI/pythia-quick-test"  # tests/conftest.py's quick_hub


def readme_commands(text: str) -> list[str]:
    """Shell commands in README order: ```bash lines (not `make`, not a "not run here" block)
    and the `pythia ...` commands on demo-output quoted inline."""
    found = []
    for m in re.finditer(r"```bash\n(.*?)```|`(pythia\s[^`]*demo-output[^`]*)`", text, re.S):
        if m.group(2):
            found.append((m.start(), re.sub(r"\s*\n\s*", " ", m.group(2))))  # a quoted command may wrap
            continue
        block = m.group(1).strip()
        if block.startswith("# not run here"):
            continue
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(("make ", "#")):
                found.append((m.start(), line))
    return [cmd for _, cmd in found]


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def _step_list(value: str) -> str:
    if not re.fullmatch(r"(step)?\d+(,(step)?\d+)*", value):
        return value  # last, all, a range A:B
    out = []
    for item in value.split(","):
        prefix = "step" if item.startswith("step") else ""
        mapped = f"{prefix}{STEPS[int(item.removeprefix('step'))]}"
        if mapped not in out:
            out.append(mapped)
    return ",".join(out)


def to_quick(text: str) -> str:
    """A full-demo command (or Python line) as the same on the quick demo."""
    text = re.sub(r"\bd(?:64-l2|96-l3|128-l3)\b", lambda m: MEMBERS[m.group(0)], text)
    text = text.replace("EleutherAI/pythia-70m", HUB_REPO)
    return re.sub(r"\bstep(\d+)\b", lambda m: f"step{STEPS[int(m.group(1))]}", text)


def quick_args(command: str) -> list[str]:
    args = shlex.split(command, comments=True)
    assert args[0] == "pythia", command
    args = [to_quick(a) if not a.startswith("--") else a for a in args[1:]]
    for i, a in enumerate(args[:-1]):
        if a in FLAGS:
            args[i + 1] = FLAGS[a]
        elif a in STEP_FLAGS:
            args[i + 1] = _step_list(args[i + 1])
    if args[0] == "analyze" and len(args) > 2 and "heads" in args[2].split(",") and "--probe-len" not in args:
        args += ["--probe-len", "16"]  # the quick demo's 64-token context holds 4 x 16 probe tokens, not 4 x 25
    return args


def test_the_readme_is_what_this_test_reads():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert "pythia train examples/suite.yaml" in [c.split("#")[0].strip() for c in commands]
    assert not any("pile_0.87" in c for c in commands)  # the "not run here" block stays out
    assert quick_args("pythia analyze demo-output lens --members d128-l3-seed1 --steps 0,64,256 --limit 48") == [
        "analyze", "demo-output", "lens", "--members", "d64-l2-seed1", "--steps", "0,10,20", "--limit", "4"]


@pytest.fixture
def repo_root(quick_demo, quick_hub, tmp_path, monkeypatch):
    """The repository as a user has it after `make demo`: demo-output/ (a hard-link copy of the
    quick demo: the project writes atomically, so the fixture stays intact), examples/suite.yaml
    (its schedule cut to 4 updates), tests/fixtures/, a small corpus of one's own (my-corpus/)."""
    out, _ = quick_demo
    shutil.copytree(out, tmp_path / "demo-output", copy_function=os.link)
    (tmp_path / "examples").mkdir()
    example = (REPO / "examples" / "suite.yaml").read_text(encoding="utf-8")
    example = re.sub(r"(?m)^  iters: 200 ", "  iters: 4 ", example)
    (tmp_path / "examples" / "suite.yaml").write_text(re.sub(r"(?m)^  interval: 50 ", "  interval: 2 ", example))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "fixtures").symlink_to(REPO / "tests" / "fixtures")
    (tmp_path / "my-corpus").mkdir()
    shutil.copy(out / "corpus" / "valid.jsonl", tmp_path / "my-corpus" / "part-0.jsonl")
    cache, _ = quick_hub
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("one_torch_thread")
def test_every_readme_command_runs_as_written(repo_root):
    text = README.read_text(encoding="utf-8")
    failures, ran = [], 0
    for command in readme_commands(text):
        args = quick_args(command)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            rc = main(args)
        ran += 1
        if rc != 0:
            failures.append(f"$ {command}\n  (quick demo: pythia {shlex.join(args)}) exit {rc}\n{buf.getvalue()[-1500:]}")
    assert ran >= 40
    assert not failures, "\n\n".join(failures)
    assert (repo_root / "runs" / "example-suite" / "report" / "index.html").is_file()
    assert (repo_root / "pythia-store" / "report" / "index.html").is_file()
    assert (repo_root / "data" / "corpus.bin").is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_every_readme_python_block_runs(repo_root):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        if "load_hooked" in block or "nnsight" in block:
            pytest.importorskip("transformer_lens")
            pytest.importorskip("nnsight")
        script = repo_root / f"readme_block_{i}.py"  # a real file: nnsight reads a traced block's source
        script.write_text(to_quick(block).replace("blocks.2.", "blocks.1."))  # the quick demo's models: 2 blocks
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")
