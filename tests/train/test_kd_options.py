"""kd_finetune's loss options: weights, the suspect-negative switch, the saturation warning before
training, and the teacher entropy in every metrics.jsonl row."""
import json
import logging
import math
from dataclasses import asdict

import pytest

from helpers.common.io_utils import read_jsonl
from helpers.train.kd_finetune import KDArgs, build_parser, kd_finetune
from helpers.train.distributed import dataclass_argv
from tests.factories import kd_args


def test_new_flags_parse_show_in_help_and_round_trip():
    a = KDArgs(**vars(build_parser().parse_args(["--kd_weight", "0.5", "--infonce_weight", "2",
                                                  "--drop_suspect_negatives", "False", "--teacher_temperature", "3"])))
    assert (a.kd_weight, a.infonce_weight, a.drop_suspect_negatives, a.teacher_temperature) == (0.5, 2.0, False, 3.0)
    d = KDArgs(**vars(build_parser().parse_args([])))
    assert (d.kd_weight, d.infonce_weight, d.drop_suspect_negatives, d.temperature) == (1.0, None, True, 0.02)
    assert asdict(KDArgs(**vars(build_parser().parse_args(dataclass_argv(a))))) == asdict(a)
    help_text = " ".join(build_parser().format_help().split())
    for flag in ("--kd_weight", "--infonce_weight", "--drop_suspect_negatives", "--teacher_temperature",
                 "FlagEmbedding's (1 with kl_div, 0 with m3_kd_loss)"):
        assert flag in help_text
    assert a.drop_suspect_negatives is False       # GroupBatches reads the stage's own arguments
    with pytest.raises(ValueError, match="both 0"):
        KDArgs(kd_weight=0.0, infonce_weight=0.0)
    with pytest.raises(ValueError, match="kd_weight"):
        KDArgs(kd_weight=-1.0)


def _scaled(tiny, tmp_path, name, fn):
    rows = read_jsonl(tiny / "train.jsonl")
    out = tmp_path / name
    out.write_text("".join(json.dumps(fn({k: v for k, v in r.items() if k != "__line__"})) + "\n" for r in rows))
    return str(out)


@pytest.mark.integration
def test_uniform_teacher_has_entropy_log_g_and_a_saturating_one_warns_before_training(tiny, tmp_path, caplog):
    flat = _scaled(tiny, tmp_path, "flat.jsonl", lambda r: dict(r, neg_scores=[r["pos_scores"][0]] * len(r["neg"])))
    rows = kd_finetune(kd_args(tiny, tmp_path / "flat", train_data=flat, eval_data=None, corpus_file=None,
                               num_train_epochs=2))
    for r in rows:                                   # every group uniform: H = log 4, relative 1
        assert r["teacher_entropy"] == pytest.approx(math.log(4), rel=1e-6)
        assert r["teacher_entropy_rel"] == pytest.approx(1.0, rel=1e-6)
    on_disk = [json.loads(x) for x in (tmp_path / "flat" / "metrics.jsonl").read_text().splitlines()]
    assert [r["teacher_entropy"] for r in on_disk] == [r["teacher_entropy"] for r in rows]

    steep = _scaled(tiny, tmp_path, "steep.jsonl", lambda r: dict(
        r, pos_scores=[s * 40 for s in r["pos_scores"]], neg_scores=[s * 40 for s in r["neg_scores"]]))
    with caplog.at_level(logging.INFO):
        rows = kd_finetune(kd_args(tiny, tmp_path / "steep", train_data=steep, eval_data=None, corpus_file=None,
                                   num_train_epochs=1, kd_weight=0.5, infonce_weight=2.0))
    warns = [r for r in caplog.records if r.levelno == logging.WARNING and "saturates" in r.getMessage()]
    assert len(warns) == 1 and "8 of 8 groups" in warns[0].getMessage()
    first_step = next(i for i, r in enumerate(caplog.records) if "training:" in r.getMessage())
    assert caplog.records.index(warns[0]) < first_step              # before training starts
    assert "0.5 * kl_div + 2 * InfoNCE" in caplog.text
    assert 0 <= rows[0]["teacher_entropy_rel"] < 0.05               # nearly one-hot targets


def test_every_new_option_is_a_notebook_parameter_a_profile_can_set(capsys):
    """Issue 16's options reach the notebooks from a run_all profile (--set), with the stage defaults."""
    import dataclasses

    import papermill as pm

    import run_all
    from helpers.mine.hn_mine import HnMineArgs
    from helpers.rerank.add_reranker_score import ScoreArgs
    from tests.conftest import REPO
    new = {"01_mine_hn": (HnMineArgs, ("relative_margin", "absolute_margin", "max_score", "sampling")),
           "02_reranker_score": (ScoreArgs, ("teacher_filter", "teacher_filter_margin")),
           "03_kd_finetune": (KDArgs, ("kd_weight", "infonce_weight", "drop_suspect_negatives",
                                       "teacher_temperature", "temperature"))}
    for nb, (cls, names) in new.items():
        declared = pm.inspect_notebook(str(REPO / "notebooks" / f"{nb}.ipynb"))
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for n in names:
            assert n in declared and declared[n]["help"], (nb, n)
            if n != "temperature":                          # the demo notebook trains at its own temperature
                assert declared[n]["default"].strip('"') == str(defaults[n]), (nb, n, declared[n]["default"])
    sets = ["relative_margin=0.05", "sampling=top", "teacher_filter=mark", "teacher_filter_margin=1.5",
            "kd_weight=0.5", "infonce_weight=2.0", "drop_suspect_negatives=false"]
    assert run_all.main(["--profile", "demo", "--list"] + [x for s in sets for x in ("--set", s)]) == 0
    out = capsys.readouterr().out
    for s in ('"relative_margin": 0.05', '"sampling": "top"', '"teacher_filter": "mark"', '"kd_weight": 0.5',
              '"infonce_weight": 2.0', '"drop_suspect_negatives": false', '"teacher_filter_margin": 1.5'):
        assert s in out, s


def test_student_settings_left_none_follow_its_class():
    """Issue 28: encoder students get what won on eedi_dev; decoders keep FlagEmbedding's; set values stay."""
    from helpers.train.kd_finetune import KDArgs
    enc = KDArgs(embedder_model_class="encoder-only-base", model_name_or_path="m")
    assert (enc.use_lora, enc.learning_rate, enc.temperature) == (False, 5e-5, 0.05)
    assert enc.by_class == {"use_lora": False, "learning_rate": 5e-5, "temperature": 0.05}
    dec = KDArgs(embedder_model_class="decoder-only-icl", model_name_or_path="m")
    assert (dec.use_lora, dec.learning_rate, dec.temperature) == (True, 1e-4, 0.02)
    mine = KDArgs(embedder_model_class="encoder-only-base", model_name_or_path="m", use_lora=True, learning_rate=2e-4)
    assert (mine.use_lora, mine.learning_rate, mine.temperature) == (True, 2e-4, 0.05)
    assert mine.by_class == {"temperature": 0.05}


def _report(path, lo, hi, verdict):
    import json
    path.write_text(json.dumps({
        "n_queries": 708, "top_k": 25, "reranker": "teacher/model_epoch_2",
        "bi-encoder": {"MAP@25": 0.2478}, "reranked": {"MAP@25": 0.2478 + (lo + hi) / 2},
        "reranked - bi-encoder": {"MAP@25": {"mean_diff": (lo + hi) / 2, "lo": lo, "hi": hi, "verdict": verdict}}}))
    return str(path)


def test_a_teacher_no_better_than_its_student_is_named_before_kd_and_can_stop_it(tmp_path, caplog):
    """Issue 29, item 3: read the teacher's re-ordering report before distilling from it."""
    from helpers.eval.rerank_eval import teacher_check
    from helpers.train.kd_finetune import KDArgs, kd_finetune
    weak = _report(tmp_path / "weak.json", -0.032, 0.007, "no difference")
    better, line = teacher_check(weak)
    assert not better and "MAP@25 0.2478 -> 0.2353, -0.0125 [-0.0320, +0.0070], no difference" in line
    assert teacher_check(_report(tmp_path / "good.json", 0.01, 0.05, "better"))[0]
    args = dict(model_name_or_path=str(tmp_path / "missing"), train_data=str(tmp_path / "missing.jsonl"),
                output_dir=str(tmp_path / "o"), knowledge_distillation=True, teacher_report=weak)
    with pytest.raises(ValueError, match="nothing to distil"):          # before the missing model is even looked for
        kd_finetune(KDArgs(**args, require_better_teacher=True))
    with pytest.raises(Exception) as e:                                   # warned, then the missing model
        kd_finetune(KDArgs(**args))
    assert "nothing to distil" not in str(e.value)
    assert "distilling from a teacher no better than its student" in caplog.text
