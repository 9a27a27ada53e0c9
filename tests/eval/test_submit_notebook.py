"""Inference-only submission: notebooks/05_submit.ipynb on the bundled demo data, an adapter whose
base sits at another path (base_model), and the Kaggle submission kernel's profile and metadata."""
import csv
import json

import pytest

import run_all
from helpers.eval.submission import SubmissionArgs, make_submission, sample_row_ids


@pytest.mark.integration
def test_05_submit_runs_through_papermill_on_the_demo_data(tmp_path, repo_root):
    import papermill as pm
    out = tmp_path / "submission.csv"
    pm.execute_notebook(str(repo_root / "notebooks" / "05_submit.ipynb"), str(tmp_path / "05.out.ipynb"),
                        cwd=str(repo_root), kernel_name="python3", progress_bar=False,
                        parameters=dict(model_name_or_path="demo:all-minilm-l6-v2",
                                        embedder_model_class="encoder-only-base", devices="cpu",
                                        query_max_len=128, passage_max_len=64,
                                        embedder_batch_size=32,
                                        test_csv="data/demo/test.csv",
                                        sample_submission="data/demo/sample_submission.csv",
                                        submission_file=str(out)))
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["QuestionId_Answer", "MisconceptionId"]
    assert {r[0] for r in rows[1:]} == set(sample_row_ids(repo_root / "data/demo/sample_submission.csv"))
    ids = {r["MisconceptionId"] for r in csv.DictReader((repo_root / "data/demo/misconception_mapping.csv").open())}
    assert all(len(set(r[1].split(" "))) == 25 and set(r[1].split(" ")) <= ids for r in rows[1:])
    executed = json.loads((tmp_path / "05.out.ipynb").read_text())
    assert any("rows by embedder demo:all-minilm-l6-v2 ->" in "".join(o.get("text", ""))
               for c in executed["cells"] for o in c.get("outputs", []))   # which model wrote the file


def test_an_adapter_is_submitted_with_its_base_at_another_path(tmp_path, repo_root):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel
    from tests.fixtures.models import save_tiny_llama
    base = save_tiny_llama(tmp_path / "base")
    torch.manual_seed(0)
    lora = get_peft_model(AutoModel.from_pretrained(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    lora.save_pretrained(str(tmp_path / "lora_epoch_1"))
    cfg = tmp_path / "lora_epoch_1" / "adapter_config.json"
    cfg.write_text(json.dumps(dict(json.loads(cfg.read_text()), base_model_name_or_path="/kaggle/input/gone/base")))
    kw = dict(model_name_or_path=str(tmp_path / "lora_epoch_1"), embedder_model_class="decoder-only-base",
              test_csv=str(repo_root / "data/demo/test.csv"), devices="cpu",
              misconception_csv=str(repo_root / "data/demo/misconception_mapping.csv"),
              sample_submission=str(repo_root / "data/demo/sample_submission.csv"),
              query_max_len=64, passage_max_len=32, output_file=str(tmp_path / "s.csv"))
    with pytest.raises(FileNotFoundError, match="/kaggle/input/gone/base"):
        make_submission(SubmissionArgs(**kw))
    sub = make_submission(SubmissionArgs(**kw, base_model=base))
    assert sub["rows"] == 15 and (tmp_path / "s.csv").read_text().startswith("QuestionId_Answer,MisconceptionId\n")


def test_the_submission_kernel_is_offline_and_runs_the_submit_profile(repo_root, capsys):
    assert run_all.main(["--profile", "submit", "--list"]) == 0
    out = capsys.readouterr().out
    assert "05_submit" in out and '"load_in_4bit": true' in out and "/kaggle/working/submission.csv" in out
    meta = json.loads((repo_root / "kaggle" / "submit" / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True and meta["machine_shape"] == "NvidiaTeslaT4"
    assert (repo_root / "kaggle" / "submit" / meta["code_file"]).is_file()
    assert meta["competition_sources"] == ["eedi-mining-misconceptions-in-mathematics"]
    assert "model_sources" in meta and meta["dataset_sources"]
    # the kernel runs the submit profile (its command, built and run: tests/kaggle/test_entry_scripts.py)
    assert 'kernel_command(work, "submit"' in (repo_root / "kaggle" / "submit" / meta["code_file"]).read_text()
