"""`pythia data ...` smoke tests through pythia.cli.main."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pythia.cli import main
from pythia.data.order import TrainingOrder

from .conftest import write_jsonl


def test_help_at_every_level(capsys):
    for argv in (["data", "--help"], ["data", "index", "--help"], ["data", "batch", "--help"],
                 ["data", "where", "--help"], ["data", "shard", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_cli_end_to_end(tmp_path, capsys):
    write_jsonl(tmp_path / "c.jsonl", 60)
    tok = str(tmp_path / "tok.json")
    assert main(["data", "train-tokenizer", str(tmp_path / "c.jsonl"), "--vocab-size", "280", "--out", tok]) == 0
    prefix = str(tmp_path / "corpus")
    assert main(["data", "tokenize", str(tmp_path / "c.jsonl"), "--tokenizer", tok, "--out", prefix,
                 "--workers", "1", "--no-progress"]) == 0
    order_args = ["--seq-len", "16", "--seed", "3", "--train-iters", "10", "--batch-size", "4", "--no-progress"]
    capsys.readouterr()
    assert main(["data", "index", prefix, *order_args]) == 0
    assert (tmp_path / "corpus_train_0_indexmap_41ns_16sl_3s_shuffle_idx.npy").exists()
    first = capsys.readouterr().out
    assert "built in" in first and "doc_idx shuffle" in first and "peak memory" in first
    assert main(["data", "index", prefix, *order_args]) == 0
    assert "built in" not in capsys.readouterr().out  # the cache is loaded, not rebuilt
    out = tmp_path / "b.npy"
    assert main(["data", "batch", prefix, "--step", "2", "--out", str(out), *order_args]) == 0
    order = TrainingOrder.build(prefix, 16, 3, 41, progress=False)
    assert np.load(out).tolist() == order.batch(2, 4).tolist()
    capsys.readouterr()
    assert main(["data", "batch", prefix, "--step", "0", "--decode", *order_args]) == 0
    assert "=== step 0 row 3 (position 3) ===" in capsys.readouterr().out
    assert main(["data", "where", prefix, "--position", "5", "--json", *order_args]) == 0
    segs = json.loads(capsys.readouterr().out)
    assert segs[0]["source"]["fields"]["meta"]["pile_set_name"] in ("Wiki", "Books")
    assert main(["data", "where", prefix, "--document", "7", *order_args]) == 0
    assert "document 7: trained on at" in capsys.readouterr().out
    pre = str(tmp_path / "pre" / "document")
    assert main(["data", "preshuffle", prefix, "--out", pre, "--export-steps", "3", *order_args]) == 0
    assert main(["data", "batch", pre, "--preshuffled", "--batch-size", "4", "--steps", "0:3",
                 "--out", str(tmp_path / "p.npy")]) == 0
    assert np.load(tmp_path / "p.npy").shape == (3, 4, 17)
    assert np.load(tmp_path / "p.npy").tolist() == [order.batch(n, 4).tolist() for n in range(3)]
    assert main(["data", "batch", prefix, "--steps", "1:3", "--out", str(tmp_path / "r.npy"), *order_args]) == 0
    assert np.load(tmp_path / "r.npy").tolist() == [order.batch(n, 4).tolist() for n in (1, 2)]
    # a step outside the order, found mid-stream: error, and no half-written file under the name
    last = order.num_positions // 4  # first step past the order
    assert main(["data", "batch", prefix, "--steps", f"{last - 2}:{last + 1}", "--out", str(tmp_path / "x.npy"),
                 *order_args]) == 2
    assert not (tmp_path / "x.npy").exists() and not list(tmp_path.glob(".x.npy*"))
    assert main(["data", "shard", pre + ".bin", "--num-shards", "3", "--out-dir", str(tmp_path / "sh"),
                 "--no-progress"]) == 0
    assert main(["data", "verify", str(tmp_path / "sh")]) == 0
    assert main(["data", "unshard", str(tmp_path / "sh"), "--out", str(tmp_path / "re" / "document"),
                 "--no-progress"]) == 0
    assert (tmp_path / "re" / "document.bin").read_bytes() == (tmp_path / "pre" / "document.bin").read_bytes()
    capsys.readouterr()
    assert main(["data", "batch", prefix, "--step", "999", *order_args]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
