"""The sentence-transformers side by side (issue 28): its script trains on our mined file, our
evaluation reads what it saved exactly as sentence-transformers encodes, and run_all runs it as a
script step that is checked like a notebook's."""
import json
import sys

import pytest

import run_all

pytest.importorskip("sentence_transformers")
sys.path.insert(0, str(run_all.ROOT / "bench"))
import st_mnrl  # noqa: E402


def mined(path, n=8):
    rows = [{"query_id": f"q{i}", "query": f"What is {i} + {i}? The student answered {3 * i}.",
             "pos": [f"Adds instead of multiplying ({i})"], "pos_ids": [str(i)],
             "neg": [f"Confuses digits {i}", f"Ignores place value {i}"], "neg_ids": [f"{i}0", f"{i}1"]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_st_model_trained_here_is_evaluated_as_sentence_transformers_encodes_it(tmp_path):
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from helpers.embed.args import EmbedderArgs
    from helpers.embed.embedder import Embedder
    rows = mined(tmp_path / "mined.jsonl")
    out = tmp_path / "st"
    argv = ["--train_data", str(tmp_path / "mined.jsonl"), "--output_dir", str(out), "--batch_size", "4",
            "--max_seq_length", "64", "--threads", "2"]
    assert st_mnrl.main(argv) == 0
    info = json.loads((out / "st_run.json").read_text())
    assert info["queries"] == 8 and info["steps"] == 2
    assert st_mnrl.main(argv) == 0 and json.loads((out / "st_run.json").read_text()) == info   # reused
    st = SentenceTransformer(str(out), device="cpu")
    want = st.encode([r["query"] for r in rows], normalize_embeddings=True)
    emb = Embedder(EmbedderArgs(model_name_or_path=str(out), embedder_model_class="encoder-only-base",
                                query_max_len=64, passage_max_len=64), show_progress=False)
    assert emb.pooling == "mean"                  # sentence-transformers 5+ writes "pooling_mode": "mean"
    assert float(np.min(np.sum(want * emb.encode_queries(rows), axis=1))) > 0.9999


def test_without_sentence_transformers_the_step_says_so_and_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    assert st_mnrl.main(["--train_data", "x.jsonl", "--output_dir", str(tmp_path / "st")]) == 0
    assert capsys.readouterr().out.startswith("skipped: sentence-transformers side by side needs")
    assert not (tmp_path / "st").exists()


def test_a_script_step_is_checked_like_a_notebook_step(tmp_path, capsys):
    import yaml
    step = {"name": "st", "script": "bench/st_mnrl.py",
            "parameters": {"train_data": "m.jsonl", "output_dir": "{run_dir}/st", "hard_negatives": 1}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "o"), "steps": [step]}))
    assert run_all.main(["--profile", str(path), "--list"]) == 0
    assert "bench/st_mnrl.py" in capsys.readouterr().out
    assert run_all.main(["--profile", str(path), "--set", "batch_size=2.5", "--list"]) == 1
    assert "step 'st' (bench/st_mnrl.py): batch_size=2.5 is a number, but the notebook's batch_size is an integer" \
        in capsys.readouterr().err
    step["parameters"]["nope"] = 1
    path.write_text(yaml.safe_dump({"run_name": "r", "output_root": str(tmp_path / "o"), "steps": [step]}))
    assert run_all.main(["--profile", str(path), "--list"]) == 1
    assert "unknown parameter(s) nope" in capsys.readouterr().err
