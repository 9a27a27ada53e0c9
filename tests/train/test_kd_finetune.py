"""kd_finetune end to end on a tiny random Llama (2 layers, hidden 64, SmolLM2's tokenizer)."""
import json

import numpy as np
import pytest

from helpers.embed.args import EmbedderArgs
from helpers.embed.embedder import Embedder
from helpers.common.io_utils import InputError, read_jsonl
from helpers.train.kd_finetune import build_parser, kd_finetune
from tests.factories import kd_args as args

pytestmark = pytest.mark.integration

def embedder(path, **kw):
    return Embedder(EmbedderArgs(model_name_or_path=str(path), embedder_model_class="decoder-only-icl",
                                 query_instruction_for_retrieval="x", query_max_len=64,
                                 passage_max_len=32, devices="cpu", **kw), show_progress=False)


def teacher_agreement(path, rows) -> float:
    """Mean Spearman correlation between the student's and the teacher's scores of the negatives."""
    e = embedder(path)
    q = e.encode_queries(rows)
    out = []
    for i, r in enumerate(rows):
        s = e.encode_corpus(r["neg"]) @ q[i]
        a, b = np.argsort(np.argsort(s)), np.argsort(np.argsort(r["neg_scores"]))
        out.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(out))


def test_kd_moves_the_student_towards_the_teacher(tiny, tmp_path):
    rows = read_jsonl(tiny / "train.jsonl")
    base = teacher_agreement(tiny / "model", rows)
    got = {}
    for kd in (True, False):
        a = args(tiny, tmp_path / f"kd{kd}", knowledge_distillation=kd, num_train_epochs=4,
                 eval_data=None, corpus_file=None)
        kd_finetune(a)
        got[kd] = teacher_agreement(tmp_path / f"kd{kd}" / "lora_epoch_4", rows)
    # measured (seeded): base -0.51, without KD -0.76, with KD +0.16
    assert got[True] - base > 0.4, (base, got)
    assert got[True] > got[False] + 0.4, (base, got)


def test_resume_gives_the_same_metrics_and_merged_equals_adapter(tiny, tmp_path, monkeypatch):
    import helpers.train.kd_finetune as kf
    full = kd_finetune(args(tiny, tmp_path / "full", save_merged_lora_model=True))
    assert [r["epoch"] for r in full] == [1, 2]
    for k in ("eval_loss", "MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"):
        assert k in full[-1]

    real_merge = kf.merge_adapter

    def interrupted(base, adapter_dir, target, *a, **kw):
        if str(target).endswith("_2"):
            raise KeyboardInterrupt
        return real_merge(base, adapter_dir, target, *a, **kw)
    monkeypatch.setattr(kf, "merge_adapter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        kd_finetune(args(tiny, tmp_path / "cut", save_merged_lora_model=True))
    monkeypatch.setattr(kf, "merge_adapter", real_merge)
    resumed = kd_finetune(args(tiny, tmp_path / "cut", save_merged_lora_model=True))
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rs]
    assert strip(resumed) == strip(full)

    merged_dir = tmp_path / "full" / "merged_model_lora_epoch_2"
    cfg = json.loads((merged_dir / "tokenizer_config.json").read_text())
    assert cfg["add_eos_token"] is True
    texts = ["apple misconception", "question 3 about maple"]
    m, a = embedder(merged_dir), embedder(tmp_path / "full" / "lora_epoch_2")
    ids = m.tokenize_passages(texts)
    assert all(x[-1] == m.tokenizer.eos_token_id and x.count(m.tokenizer.eos_token_id) == 1 for x in ids)
    assert np.abs(m.encode_corpus(texts) - a.encode_corpus(texts)).max() < 1e-4
    qrows = read_jsonl(tiny / "test.jsonl")
    assert np.abs(m.encode_queries(qrows) - a.encode_queries(qrows)).max() < 1e-4


def test_bad_input_fails_before_training(tiny, tmp_path):
    rows = read_jsonl(tiny / "train.jsonl")
    del rows[1]["neg_scores"]
    f = tmp_path / "mined.jsonl"
    f.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "__line__"}) + "\n" for r in rows))
    with pytest.raises(InputError, match="mined.jsonl, line 2, field 'neg_scores'"):
        kd_finetune(args(tiny, tmp_path / "o", train_data=str(f)))
    assert not (tmp_path / "o" / "metrics.jsonl").exists()
    with pytest.raises(ValueError, match="kd_loss_type"):
        kd_finetune(args(tiny, tmp_path / "o", kd_loss_type="mse"))


def test_command_line_flags():
    a = build_parser().parse_args(["--knowledge_distillation", "False", "--negatives_cross_device",
                                   "--train_data", "t.jsonl", "--save_merged", "False", "--devices", "None"])
    assert a.knowledge_distillation is False and a.negatives_cross_device is True
    assert a.save_merged_lora_model is False and a.devices is None and a.temperature is None
    from helpers.train.kd_finetune import KDArgs
    assert KDArgs(**vars(a)).temperature == 0.02          # None: the class default (the decoder student's)


def test_two_processes_under_torchrun_on_cpu(tiny, tmp_path):
    """DDP through the launcher: two CPU processes (gloo), rank 0 writes, exit code checked."""
    lines = []
    rows = kd_finetune(args(tiny, tmp_path / "ddp", devices="cpu,cpu", num_train_epochs=1,
                            per_device_train_batch_size=2, negatives_cross_device=True),
                       echo=lines.append)
    assert [r["epoch"] for r in rows] == [1] and "MAP@25" in rows[0]
    assert any("world_size" in l or "training:" in l for l in lines)
    assert (tmp_path / "ddp" / "lora_epoch_1" / "adapter_model.safetensors").exists()


def test_epoch_table_has_the_seeds_columns():
    from helpers.train.kd_report import epoch_table
    df = epoch_table([{"epoch": 1, "global_step": 3, "eval_loss": 1.23456, "MAP@25": 0.5, "Recall@25": 0.9,
                       "Recall@50": 0.95, "Recall@75": 0.97, "Recall@100": 1.0, "train_loss": 2.0}])
    assert df.index.name == "Epoch" and list(df.columns)[:6] == [
        "eval_loss", "MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"]
    assert df.loc[1, "eval_loss"] == 1.2346


def test_notebook_runs_through_papermill(tiny, tmp_path, repo_root):
    pm = pytest.importorskip("papermill")
    out = tmp_path / "kd"
    pm.execute_notebook(str(repo_root / "notebooks/03_kd_finetune.ipynb"), str(tmp_path / "03.ipynb"),
                        cwd=str(repo_root), progress_bar=False, parameters=dict(
                            model_name_or_path=str(tiny / "model"), train_data=str(tiny / "train.jsonl"),
                            eval_data=str(tiny / "test.jsonl"), corpus_file=str(tiny / "corpus.jsonl"),
                            output_dir=str(out), num_train_epochs=1, query_max_len=64, passage_max_len=32,
                            train_group_size=4, per_device_train_batch_size=4, lora_rank=8, lora_alpha=16,
                            gradient_checkpointing=False, devices="cpu"))
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1 and "MAP@25" in rows[0]
    assert (out / "merged_model_lora_epoch_1" / "model.safetensors").exists()


def test_encoder_folders_record_their_training_pooling(tmp_path):
    """A fine-tuned encoder (e.g. MiniLM, mean pooling) is pooled the same way when evaluated."""
    from transformers import AutoTokenizer

    from helpers.embed.loading import _encoder_pooling_default, save_tokenizer
    from helpers.common.models import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:all-minilm-l6-v2"))
    for pooling in ("mean", "cls", "last_token"):
        d = tmp_path / pooling
        d.mkdir()
        save_tokenizer(tok, d, add_eos=False, pooling=pooling)
        assert _encoder_pooling_default(str(d)) == pooling
    save_tokenizer(tok, tmp_path / "dec", add_eos=True, pooling="last_token")
    assert not (tmp_path / "dec" / "1_Pooling").exists()
