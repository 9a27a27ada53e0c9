"""Reranker fine-tuning: the group cross-entropy on plain tensors, the training layout, and a tiny
run that lowers the loss and whose adapter the scoring stage loads with the same scores."""
import json
import math
import random

import pytest
import torch

from helpers.train.train_reranker import RerankerTrainArgs, PairBatches, group_ce_loss


def test_group_ce_by_hand():
    s = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    want = (-math.log(math.exp(2) / (math.exp(2) + 2)) - math.log(1 / (2 + math.e))) / 2
    assert group_ce_loss(s, 3).item() == pytest.approx(want, abs=1e-6)
    assert group_ce_loss(s.reshape(-1), 3).item() == pytest.approx(want, abs=1e-6)   # flat, groups contiguous


def test_group_ce_target_is_index_zero():
    s = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    low = group_ce_loss(s, 4).item()
    high = group_ce_loss(s[:, [1, 0, 2, 3]], 4).item()    # the same scores with the positive moved
    assert low < 0.03 and high > 4.0
    # the gradient raises the positive's score and lowers the negatives'
    x = torch.zeros(2, 4, requires_grad=True)
    group_ce_loss(x, 4).backward()
    assert (x.grad[:, 0] < 0).all() and (x.grad[:, 1:] > 0).all()


@pytest.mark.parametrize("shape,g", [((7,), 4), ((2, 3), 4), ((2, 2, 2), 2)])
def test_group_ce_shape_errors(shape, g):
    with pytest.raises(ValueError, match="group"):
        group_ce_loss(torch.zeros(shape), g)


def test_group_ce_nan():
    """A NaN score is an fp16 overflow, not bad input: the loss is NaN and the loop skips the step
    (it used to raise, which ends a run, and under DDP both ranks)."""
    assert torch.isnan(group_ce_loss(torch.tensor([1.0, float("nan")]), 2))


def test_args_checks():
    with pytest.raises(ValueError, match="train_group_size"):
        RerankerTrainArgs(train_group_size=1)
    with pytest.raises(ValueError, match="max_train_queries"):
        RerankerTrainArgs(max_train_queries=0)


# ----------------------------------------------------------------------------- tiny model runs
TOPICS = ["adds the numerators and the denominators", "multiplies instead of dividing",
          "confuses area with perimeter", "subtracts the smaller digit from the larger",
          "thinks a negative times a negative is negative", "rounds down always",
          "ignores the place value of zero", "squares instead of doubling"]


def mined_file(path, n=8, negs=3):
    rows = []
    for i in range(n):
        others = [t for j, t in enumerate(TOPICS) if j != i % len(TOPICS)]
        rows.append({"query_id": f"q{i}", "query": f"Question {i}: the student {TOPICS[i % len(TOPICS)]}?",
                     "pos": [TOPICS[i % len(TOPICS)]], "pos_ids": [str(i % len(TOPICS))],
                     "neg": others[:negs], "neg_ids": [str(TOPICS.index(t)) for t in others[:negs]],
                     "prompt": "p", "question_id": str(i), "subject_id": "s", "construct_id": "c"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tiny_args(tmp_path, model, **kw):
    base = dict(model_name_or_path=model, train_data=mined_file(tmp_path / "train.jsonl"),
                eval_data=mined_file(tmp_path / "eval.jsonl"), output_dir=str(tmp_path / "out"),
                max_len=48, train_group_size=4, per_device_train_batch_size=4, num_train_epochs=3,
                learning_rate=5e-3, warmup_ratio=0.0, lora_rank=4, lora_alpha=8, lora_dropout=0.0,
                target_modules="q_proj,v_proj", devices="cpu", show_progress=False)
    base.update(kw)
    return RerankerTrainArgs(**base)


@pytest.fixture(scope="module")
def tiny_model(tiny_gemma_reranker_dir):           # tests/fixtures/models.py, saved once a session
    return tiny_gemma_reranker_dir


@pytest.mark.integration
def test_batches_use_the_scoring_layout(tmp_path, tiny_model):
    """A training pair is exactly the pair the scoring stage builds (prefix + suffix, positive first)."""
    from transformers import AutoTokenizer
    from helpers.rerank.inputs import DecoderLayout
    from helpers.rerank.scorers import load_pair_model
    from helpers.train.train_reranker import load_rows
    a = tiny_args(tmp_path, tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    layout = DecoderLayout(tok, a.max_len, None, a.prompt)
    rows = load_rows(a.train_data, a)
    scorer = load_pair_model(tiny_model, max_length=a.max_len, prompt=a.prompt, training=True).scorer()
    b = PairBatches(rows, layout, scorer, a)
    batch = b.build(rows[:2], random.Random(0))
    assert batch["input_ids"].shape[0] == 2 * 4 and batch["input_ids"].shape[1] % 8 == 0
    pre, suf = layout.encode(["A: " + rows[0]["query"]], [["B: " + rows[0]["pos"][0]]])
    want = pre[0] + suf[0][0]
    got = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert got == want


@pytest.mark.integration
def test_tiny_training_lowers_the_loss_and_loads_for_scoring(tmp_path, tiny_model):
    from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
    from helpers.rerank.stats import group_rank_stats
    from helpers.train.train_reranker import train_reranker
    a = tiny_args(tmp_path, tiny_model)
    rows = train_reranker(a)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.05
    assert rows[-1]["group_ce"] < rows[0]["group_ce"]
    adapter = tmp_path / "out" / "lora_epoch_3"
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == tiny_model and cfg["r"] == 4
    # the scoring stage loads the adapter (merged) and gives the scores training evaluated with
    out = tmp_path / "scored.jsonl"
    add_reranker_score(ScoreArgs(input_file=a.eval_data, output_file=str(out), reranker_name_or_path=tiny_model,
                                 peft_adapter=str(adapter), reranker_max_length=a.max_len,
                                 reranker_batch_size=8, devices="cpu"))
    st = group_rank_stats([json.loads(x) for x in out.read_text().splitlines()])
    assert st["map"] == pytest.approx(rows[-1]["group_map"], abs=1e-9)
    assert st["top1"] == pytest.approx(rows[-1]["group_top1"], abs=1e-9)


@pytest.mark.integration
def test_seeded_runs_are_identical(tmp_path, tiny_model):
    from helpers.train.train_reranker import train_reranker
    losses = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        rows = train_reranker(tiny_args(tmp_path / name, tiny_model, num_train_epochs=1, eval_data=None))
        losses.append(rows[0]["train_loss"])
    assert losses[0] == losses[1]


# ----------------------------------------------------------------------------- cross-encoder teacher
def test_encoder_args_checks():
    with pytest.raises(ValueError, match="reranker_model_class"):
        RerankerTrainArgs(reranker_model_class="encoder-only")
    with pytest.raises(ValueError, match="full fine-tuning"):
        RerankerTrainArgs(use_lora=False)                     # an LLM reranker trains adapters
    assert RerankerTrainArgs().target_modules == "q_proj,k_proj,v_proj,o_proj"
    assert RerankerTrainArgs(reranker_model_class="encoder-only-base").target_modules is None


@pytest.mark.integration
@pytest.mark.parametrize("use_lora", [True, False])
def test_cross_encoder_teacher_trains_and_scores_as_trained(tmp_path, use_lora):
    """encoder-only-base: pairs in the tokenizer's template, group CE; the saved model_epoch_n
    scores the eval groups in the scoring stage exactly as training evaluated them. On the real
    MiniLM: a random tiny BERT's new head sees near-identical pooled outputs and does not move in
    6 steps."""
    from transformers import AutoTokenizer
    from helpers.rerank.add_reranker_score import ScoreArgs, add_reranker_score
    from helpers.rerank.inputs import EncoderLayout
    from helpers.rerank.stats import group_rank_stats
    from helpers.rerank.scorers import CrossEncoderScorer
    from helpers.train.train_reranker import load_rows, train_reranker
    from helpers.common.models import resolve_model
    model = resolve_model("demo:all-minilm-l6-v2")
    a = tiny_args(tmp_path, model, reranker_model_class="encoder-only-base", target_modules=None,
                  use_lora=use_lora, learning_rate=1e-3 if use_lora else 2e-4, lora_rank=8, lora_alpha=16)
    tok = AutoTokenizer.from_pretrained(model)
    layout = EncoderLayout(tok, a.max_len)
    rows = load_rows(a.train_data, a)
    batch = PairBatches(rows, layout, CrossEncoderScorer(None, tok, tok.pad_token_id), a).build(rows[:2], random.Random(0))
    assert batch["input_ids"].shape[0] == 2 * 4 and "token_type_ids" in batch
    got = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert got == tok("A: " + rows[0]["query"], "B: " + rows[0]["pos"][0])["input_ids"]   # a text pair, positive first

    out_rows = train_reranker(a)
    assert [r["epoch"] for r in out_rows] == [1, 2, 3]
    model_dir = tmp_path / "out" / "model_epoch_3"
    if use_lora:      # a new one-logit head starts near zero: 6 LoRA steps move it, not the loss much
        from safetensors.torch import load_file
        w1, w3 = (load_file(tmp_path / "out" / f"model_epoch_{e}" / "model.safetensors")["classifier.weight"]
                  for e in (1, 3))
        assert not torch.equal(w1, w3)
    else:
        assert out_rows[-1]["train_loss"] < out_rows[0]["train_loss"] - 0.05
    assert len(json.loads((model_dir / "config.json").read_text())["id2label"]) == 1     # one logit
    out = tmp_path / "scored.jsonl"
    add_reranker_score(ScoreArgs(input_file=a.eval_data, output_file=str(out), reranker_name_or_path=str(model_dir),
                                 reranker_model_class="encoder-only-base", reranker_max_length=a.max_len,
                                 reranker_batch_size=8, devices="cpu"))
    st = group_rank_stats([json.loads(x) for x in out.read_text().splitlines()])
    assert st["map"] == pytest.approx(out_rows[-1]["group_map"], abs=1e-9)
    assert st["top1"] == pytest.approx(out_rows[-1]["group_top1"], abs=1e-9)


@pytest.mark.integration
@pytest.mark.parametrize("cls", ["encoder-only-base", "decoder-only-base"])
def test_length_buckets_give_the_same_scores_and_gradients(tmp_path, tiny_model, cls):
    """Pairs of very different lengths (one query per group): chunked scores and gradients equal
    the padded batch's (right-padded cross-encoder; left-padded RoPE decoder)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from helpers.common.models import resolve_model
    from helpers.rerank.inputs import DecoderLayout, EncoderLayout
    from helpers.rerank.scorers import CrossEncoderScorer
    from helpers.train.train_reranker import load_rows, pair_scores
    enc = cls == "encoder-only-base"
    path = resolve_model("demo:all-minilm-l6-v2") if enc else tiny_model
    a = tiny_args(tmp_path, path, reranker_model_class=cls, target_modules=None, max_len=128)
    tok = AutoTokenizer.from_pretrained(path)
    rows = load_rows(a.train_data, a)
    for i, r in enumerate(rows):
        r["query"] = r["query"] + " and then" * (40 * (i % 2))          # short and long groups
    torch.manual_seed(0)
    if enc:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).eval()
        score = CrossEncoderScorer(model, tok, tok.pad_token_id)
        batch = PairBatches(rows, EncoderLayout(tok, a.max_len), score, a).build(rows[:4], random.Random(0))
    else:
        from helpers.rerank.paths import YesScorer
        lm = AutoModelForCausalLM.from_pretrained(path).eval()
        layout = DecoderLayout(tok, a.max_len, None, a.prompt)
        yes = tok("Yes", add_special_tokens=False)["input_ids"][0]
        score = YesScorer(lm, "cpu", yes, tok.pad_token_id, "left", 4)
        batch = PairBatches(rows, layout, score, a).build(rows[:4], random.Random(0))
        model = lm
    inputs = {k: v for k, v in batch.items() if k != "group_size"}
    lens = inputs["attention_mask"].sum(1)
    from helpers.common.tensors import length_chunks
    assert len(length_chunks(lens.tolist(), 256)) > 1                  # CPU's overhead: it does split
    out = {}
    for buckets in (False, True):
        model.zero_grad()
        a.length_buckets = buckets
        s = pair_scores(score, inputs, a, "cpu")
        group_ce_loss(s, a.train_group_size).backward()
        out[buckets] = s.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]
    torch.testing.assert_close(out[True][0], out[False][0], atol=1e-4, rtol=1e-4)
    assert len(out[True][1]) == len(out[False][1]) > 0
    for g1, g0 in zip(out[True][1], out[False][1]):
        torch.testing.assert_close(g1, g0, atol=1e-4, rtol=1e-3)


@pytest.mark.integration
@pytest.mark.parametrize("cls", ["decoder-only-base", "encoder-only-base"])
def test_the_trainers_scorer_gives_the_scoring_stages_scores(tmp_path, cls, tiny_gemma_reranker_dir,
                                                             tiny_bert_cross_encoder_dir):
    """The trainer's pairs (its loader, batch builder and scorer, as a training step runs them)
    score what the scoring stage's reranker scores for the same groups."""
    from helpers.rerank.reranker import load_reranker
    from helpers.rerank.scorers import load_pair_model
    from helpers.train.train_reranker import load_rows
    path = tiny_gemma_reranker_dir if cls == "decoder-only-base" else tiny_bert_cross_encoder_dir
    a = tiny_args(tmp_path, path, reranker_model_class=cls, target_modules=None)
    rows = load_rows(a.train_data, a)[:3]
    parts = load_pair_model(path, cls, max_length=a.max_len, prompt=a.prompt, training=True, seed=0)
    parts.model.eval()
    scorer = parts.scorer(parts.model)
    b = PairBatches(rows, parts.layout, scorer, a)
    qs, ps = b.texts(rows, random.Random(0))                   # the groups build() samples (same rng)
    batch = b.build(rows, random.Random(0))
    with torch.no_grad():
        got = scorer(**{k: v for k, v in batch.items() if k != "group_size"}).tolist()
    stage = load_reranker(path, cls, query_instruction_for_rerank=None, passage_instruction_for_rerank=None,
                          prompt=a.prompt, max_length=a.max_len, batch_size=3, devices="cpu", show_progress=False)
    want = [v for g in stage.score_groups(qs, ps) for v in g]      # the texts are formatted already
    assert len(got) == len(want) == 3 * a.train_group_size
    assert got == pytest.approx(want, abs=1e-4)


def test_trained_model_names_what_the_scoring_stage_loads(tmp_path):
    from helpers.train.train_reranker import trained_model
    llm = RerankerTrainArgs(output_dir=str(tmp_path), model_name_or_path="demo:gemma-3-270m")
    assert trained_model(llm, 2) == {"reranker_name_or_path": "demo:gemma-3-270m",
                                     "peft_adapter": str(tmp_path / "lora_epoch_2")}
    enc = RerankerTrainArgs(output_dir=str(tmp_path), model_name_or_path="demo:all-minilm-l6-v2",
                            reranker_model_class="encoder-only-base")
    assert trained_model(enc, 1) == {"reranker_name_or_path": str(tmp_path / "model_epoch_1")}
