"""Smaller things a new user meets: the lm-eval command's default device, warnings said once
and saying whether anything is wrong, task folders that can move, no empty folder left by a
failed tokenization, the Hub-missing message, and Ctrl-C on `analyze`."""
from __future__ import annotations

import shutil
import warnings

import pytest

from pythia.cli import main


def test_lm_eval_command_gets_the_device_that_exists(monkeypatch):
    import torch

    from pythia.lm_eval import with_device

    args = ["--model", "pythia", "--model_args", "pretrained=demo-output/run", "--tasks", "t"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert with_device(args) == [*args, "--device", "cpu"]  # lm-eval's own default, cuda:0, fails here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert with_device(args) == [*args, "--device", "cuda"]
    assert with_device([*args, "--device", "cpu"]) == [*args, "--device", "cpu"]  # the user's choice stands
    assert with_device([*args, "--device=cuda:1"]) == [*args, "--device=cuda:1"]
    assert with_device(["ls", "tasks"]) == ["ls", "tasks"]  # not an evaluation


def test_a_task_folder_still_loads_after_it_moved(tmp_path, monkeypatch):
    from pythia.analysis.term_frequency import task_name, write_arithmetic_tasks
    from pythia.evals.tasks import load_tasks

    write_arithmetic_tasks(tmp_path / "a", ops=("addition",), x2_max=2)
    assert str(tmp_path) not in (tmp_path / "a" / f"{task_name('addition', 3)}.yaml").read_text()
    shutil.move(tmp_path / "a", tmp_path / "moved")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the old folder nor the new one
    (spec,) = load_tasks([task_name("addition", 3)], str(tmp_path / "moved"))
    task = next(iter(spec.loaded["tasks"].values()))
    assert [(d["x1"], d["x2"]) for d in task.eval_docs] == [(3, 1), (3, 2)]


def test_tokenizing_a_binary_file_leaves_no_output_folder(tmp_path, capsys, quick_demo):
    out, _ = quick_demo
    binary = tmp_path / "blob.dat"
    binary.write_bytes(bytes(range(256)) * 8)
    assert main(["data", "tokenize", str(binary), "--tokenizer", str(out / "data" / "tokenizer.json"),
                 "--out", str(tmp_path / "new" / "deeper" / "corpus")]) == 2
    assert "binary file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_hub_missing_message_names_the_hf_command(tmp_path, monkeypatch):
    from pythia.run import RunError, open_run

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises((RunError, FileNotFoundError), match=r"`hf download EleutherAI/pythia-70m --revision step1000`"):
        open_run("EleutherAI/pythia-70m")


def test_verify_says_a_note_every_member_shares_once(quick_demo, capsys):
    out, _ = quick_demo
    assert main(["verify", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "step0 == step1" in line]
    assert len(lines) == 1  # not once per member (the fork, from step 10 on, has no step0)
    assert lines[0].startswith("  note (d32-l2-seed1, d32-l2-seed2, d64-l2-seed1, d64-l2-seed2): step0 == step1")


def test_a_step_no_member_has_is_named_once_for_all_members(quick_demo):
    from pythia.analysis.runner import run_analyses
    from pythia.run import RunError, open_run

    out, _ = quick_demo
    with pytest.raises(RunError) as err:
        run_analyses(open_run(out), "val_loss", members=["d32-l2-seed1", "d32-l2-seed2", "d64-l2-seed2"], steps="7")
    message = str(err.value)
    assert message.count("lack") == 1 and "d32-l2-seed1, d32-l2-seed2, d64-l2-seed2 (lack [7]; have " in message


def test_seed_spread_warnings_say_once_that_nothing_is_wrong():
    from pythia.analysis import seeds

    dropped = {("d32-l2", "all steps", ("d32-l2-seed2",)): [f"eval:acc{i}@t" for i in range(100)],
               ("d64-l2", "all steps", ("d64-l2-seed2",)): [f"eval:acc{i}@t" for i in range(100)]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seeds._warn_dropped(dropped)
    (w,) = caught
    text = str(w.message)
    assert "nothing wrong" in text and "eval (100 metrics; no rows for d32-l2-seed2, d64-l2-seed2)" in text


def test_ctrl_c_on_analyze_says_what_was_kept_and_how_to_resume(quick_demo, tmp_path, monkeypatch, capsys):
    from pythia.analysis import runner

    out, _ = quick_demo
    shutil.copytree(out, tmp_path / "demo")
    real = runner._one_checkpoint
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_one_checkpoint", interrupted_second)
    assert main(["analyze", str(tmp_path / "demo"), "weights", "--force", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted. 1 unit(s) computed in this run are kept in" in err
    assert "run the same command again to resume" in err



@pytest.mark.usefixtures("one_torch_thread")
def test_nnsight_language_model_on_a_step_folder_as_the_readme_says(quick_demo):
    """nnsight 0.8's lazy (meta) load cannot guess any folder's tokenizer with transformers 5 (its
    check of what a pipeline loads reads a class path as a class): the README's two ways round it
    load a step folder and give our logits."""
    pytest.importorskip("nnsight")
    import torch
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    import pythia

    out, _ = quick_demo
    folder = str(out / "run" / "d64-l2-seed1" / "step20")
    ids = torch.as_tensor([AutoTokenizer.from_pretrained(folder)("def __init__(self")["input_ids"]])
    with torch.no_grad():
        ours = pythia.load_model(folder)(ids)
    for lm in (LanguageModel(folder, dispatch=True), LanguageModel(folder, tokenizer=AutoTokenizer.from_pretrained(folder))):
        with lm.trace("def __init__(self"):
            logits = lm.output.logits.save()
        torch.testing.assert_close(logits, ours, atol=1e-5, rtol=0)


def test_the_training_map_says_when_seeds_have_no_majority_path():
    from pythia.report.sections.seeds import _paths_text

    steps = [0, 1, 2]
    cell = {("s1", 0): 0, ("s1", 1): 1, ("s1", 2): 2, ("s2", 0): 0, ("s2", 1): 1, ("s2", 2): 2,
            ("s3", 0): 0, ("s3", 1): 3, ("s3", 2): 4, ("s4", 0): 0, ("s4", 1): 3, ("s4", 2): 4}
    text = _paths_text(["s1", "s2", "s3", "s4"], steps, cell, detours=set())  # 2-2: no majority, no detour
    assert text.startswith("no majority path") and "s1, s2 (states 0, 1, 2) | s3, s4 (states 0, 3, 4)" in text
    cell.update({("s4", 1): 1, ("s4", 2): 2})  # 3-1: s3 leaves the majority's path
    assert _paths_text(["s1", "s2", "s3", "s4"], steps, cell, detours={"s3"}).endswith("majority's): s3")
