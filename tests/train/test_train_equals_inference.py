"""The student sees in training exactly what it sees at inference: the token ids of a training
query equal the ids the embedder feeds for the same query (ICL suffix, in-context examples, EOS,
instruction rule), and the saved tokenizer keeps it that way after training."""
import json
import logging
import random

import numpy as np
import pytest
import torch

from helpers.embed.embedder import Embedder
from helpers.embed.loading import _load_tokenizer
from helpers.eval.evaluate import EvalArgs
from helpers.mine.hn_mine import HnMineArgs
from helpers.embed.loading import save_tokenizer
from helpers.train.kd_finetune import KDArgs, training_tokenizer
from helpers.common.models import resolve_model
from helpers.common.prompts import QUERY_TEMPLATE, RETRIEVAL_INSTRUCTION
from helpers.train.groups import GroupBatches

SMOL, MINILM = "demo:smollm2-135m-instruct", "demo:all-minilm-l6-v2"


def eedi_row(i, wrong="4"):
    q = QUERY_TEMPLATE.format(QuestionText=f"What is {i} + {i}?", ConstructName="Add integers",
                              CorrectAnswerText=str(2 * i), WrongAnswerText=wrong)
    return {"query_id": f"{i}_A", "query": q, "pos": [f"Adds the digits of {i}"], "pos_ids": [str(i)],
            "neg": [f"other {i} {j}" for j in range(3)], "neg_ids": [f"n{i}{j}" for j in range(3)],
            "prompt": RETRIEVAL_INSTRUCTION, "question_id": str(i), "subject_id": "1", "construct_id": "1"}


class _Stub(torch.nn.Module):       # Embedder(config, model, tok) needs a model with parameters only
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


@pytest.fixture(scope="module")
def smol_tok():
    return _load_tokenizer(resolve_model(SMOL), False)


def trained_tok(name, decoder):
    tok = _load_tokenizer(resolve_model(name), False)
    return tok, training_tokenizer(tok, decoder)


def train_query_ids(args: KDArgs, tok, append_eos, rows, seed):
    """(prefixes, unpadded query ids) of one training batch of ``rows``, as kd_finetune builds it."""
    gb = GroupBatches(rows, tok, args, batch_size=len(rows), seed=0, train=False, append_eos=append_eos)
    _, prefixes, _, _ = gb.texts(rows, random.Random(seed))
    b = gb.build(rows, random.Random(seed))["queries"]
    ids = [x[m.bool()].tolist() for x, m in zip(b["input_ids"], b["attention_mask"])]
    return prefixes, ids


def kd_args(cls, **kw):
    return KDArgs(model_name_or_path=SMOL, embedder_model_class=cls, eval_data=None, corpus_file=None,
                  query_max_len=256, passage_max_len=32, knowledge_distillation=False, train_group_size=2, **kw)


@pytest.mark.parametrize("cls", ["decoder-only-icl", "decoder-only-base"])
def test_training_query_ids_equal_the_embedders_without_examples(cls):
    tok, eos = trained_tok(SMOL, True)
    args = kd_args(cls, max_examples=0)
    rows = [eedi_row(i) for i in range(3)]
    prefixes, ids = train_query_ids(args, tok, eos, rows, 0)
    assert prefixes == ["", "", ""]
    emb = Embedder(args, _Stub(), tok)
    assert ids == emb.tokenize_queries(rows)
    text = tok.decode(ids[0])
    assert text.endswith(("\n<response>" if cls == "decoder-only-icl" else "Wrong answer: 4") + tok.eos_token)
    assert text.count(tok.eos_token) == 1


@pytest.mark.parametrize("cls", ["decoder-only-icl", "decoder-only-base"])
def test_training_query_ids_equal_the_embedders_with_examples(cls, tmp_path):
    """Two queries a batch: a query's example can only be the other one, so the embedder gets the
    same example from an examples.json that holds just it."""
    tok, eos = trained_tok(SMOL, True)
    args = kd_args(cls, max_examples=3, example_query_max_len=512, example_passage_max_len=512)
    rows = [eedi_row(1), eedi_row(2)]
    seen = set()
    for seed in range(12):
        prefixes, ids = train_query_ids(args, tok, eos, rows, seed)
        for i, (prefix, q_ids) in enumerate(zip(prefixes, ids)):
            other = rows[1 - i]
            if prefix:
                assert cls == "decoder-only-icl"            # only ICL models get examples
                ex = {"query_id": other["query_id"], "instruct": other["prompt"], "query": other["query"],
                      "response": other["pos"][0]}
                f = tmp_path / "examples.json"
                f.write_text(json.dumps({"all": [ex]}))
                a = kd_args(cls, max_examples=3, examples_for_task=str(f), examples_number=1)
            else:
                a = args
            emb = Embedder(a, _Stub(), tok)
            assert q_ids == emb.tokenize_queries([rows[i]])[0], (cls, seed, i)
            seen.add(bool(prefix))
    assert seen == ({True, False} if cls == "decoder-only-icl" else {False})


def test_an_example_never_cuts_the_query(smol_tok):
    """A query that nearly fills query_max_len keeps its last line; examples that do not fit are
    dropped (FlagEmbedding's budget would cut the wrong-answer line)."""
    tok, eos = trained_tok(SMOL, True)
    long_q = eedi_row(1, wrong="the final wrong answer")
    long_q["query"] = long_q["query"].replace("What is 1 + 1?", "What is 1 + 1? " + "Think about it. " * 20)
    rows = [long_q, eedi_row(2)]
    n = len(Embedder(kd_args("decoder-only-icl"), _Stub(), tok).tokenize_queries([long_q])[0])
    args = KDArgs(model_name_or_path=SMOL, eval_data=None, corpus_file=None, query_max_len=n + 10, knowledge_distillation=False,
                  passage_max_len=32, max_examples=5)
    short_got_one = False
    for seed in range(12):
        prefixes, ids = train_query_ids(args, tok, eos, rows, seed)
        assert prefixes[0] == ""                         # no example fits beside the long query
        assert tok.decode(ids[0]).endswith("Wrong answer: the final wrong answer\n<response>" + tok.eos_token)
        assert len(ids[1]) <= args.query_max_len + 1     # with its example, the short one still fits
        short_got_one |= bool(prefixes[1])
    assert short_got_one                                 # the short query had room for one


def test_the_saved_tokenizer_feeds_the_same_ids_at_inference(tmp_path):
    """After training, the model folder's tokenizer (add_eos_token saved) gives the training ids."""
    tok, eos = trained_tok(SMOL, True)
    args = kd_args("decoder-only-icl", max_examples=0)
    rows = [eedi_row(i) for i in range(2)]
    _, ids = train_query_ids(args, tok, eos, rows, 0)
    save_tokenizer(tok, tmp_path, add_eos=True)
    tok2 = _load_tokenizer(str(tmp_path), False)
    tok2.name_or_path_for_eos = str(tmp_path)
    assert Embedder(args, _Stub(), tok2).tokenize_queries(rows) == ids


# ----------------------------------------------------------------------------- instruction rule
def test_encoders_get_no_instruction_unless_asked(caplog):
    """encoder-only-base: rows' prompts are ignored by default, in training, mining and evaluation
    alike; --use_row_prompts true or a global instruction brings one in; the log says which."""
    tok, eos = trained_tok(MINILM, False)
    rows = [eedi_row(1)]
    plain = tok(rows[0]["query"], truncation=True, max_length=256)["input_ids"]
    with_prompt = tok(RETRIEVAL_INSTRUCTION + rows[0]["query"], truncation=True, max_length=256)["input_ids"]
    common = dict(embedder_model_class="encoder-only-base")
    cfgs = {
        "train": lambda **kw: KDArgs(model_name_or_path=MINILM, eval_data=None, corpus_file=None, query_max_len=256,
                                     knowledge_distillation=False,
                                     **common, **kw),
        "mine": lambda **kw: HnMineArgs(model_name_or_path=MINILM, input_file="x", output_file="y",
                                        query_max_len=256, **common, **kw),
        "eval": lambda **kw: EvalArgs(model_name_or_path=MINILM, queries_file="x", corpus_file="y", output_dir="z",
                                      query_max_len=256, **common, **kw),
    }
    for stage, make in cfgs.items():
        for kw, want in (({}, plain), ({"use_row_prompts": True}, with_prompt),
                         ({"query_instruction_for_retrieval": RETRIEVAL_INSTRUCTION}, with_prompt),
                         ({"use_row_prompts": False, "query_instruction_for_retrieval": "Other: "},
                          tok("Other: " + rows[0]["query"], truncation=True, max_length=256)["input_ids"])):
            a = make(**kw)
            ecfg = a
            if stage == "train":
                _, ids = train_query_ids(a, tok, eos, rows, 0)
                assert ids[0] == want, (stage, kw)
            with caplog.at_level(logging.INFO, logger="helpers.embed.embedder"):
                emb = Embedder(ecfg, _Stub(), tok)
                assert emb.tokenize_queries(rows)[0] == want, (stage, kw)
                caplog.clear()
                emb.encode_ids = lambda ids, what="": None         # the log line, without a model
                emb.encode_queries(rows)
            assert "query instruction" in caplog.text
            assert ("no instruction" in caplog.text) == (want == plain), (stage, kw, caplog.text)


def test_decoders_read_row_prompts_by_default_and_can_ignore_them(smol_tok):
    rows = [dict(eedi_row(1), prompt="Row prompt.")]
    on = KDArgs(eval_data=None, corpus_file=None)
    off = KDArgs(eval_data=None, corpus_file=None, use_row_prompts=False,
                 query_instruction_for_retrieval="Global.")
    e_on, e_off = Embedder(on, _Stub(), smol_tok), Embedder(off, _Stub(), smol_tok)
    assert e_on.query_inputs(rows)[0][0].startswith("<instruct>Row prompt.\n<query>Question:")
    assert e_off.query_inputs(rows)[0][0].startswith("<instruct>Global.\n<query>Question:")


# ----------------------------------------------------------------------------- per-epoch eval, defaults
def test_per_epoch_eval_can_use_in_context_examples(tmp_path, smol_tok):
    from helpers.train.kd_finetune import retrieval_eval
    from tests.fixtures.models import tiny_llama
    f = tmp_path / "examples.json"
    f.write_text(json.dumps({"by_construct": {"1": [{"query_id": "9_A", "query": "Nine plus nine", "response": "Adds 9"}]}}))
    a = KDArgs(eval_data="x", corpus_file="y", examples_for_task=str(f), examples_number=1,
               query_max_len=256, passage_max_len=32, embedder_batch_size=4, show_progress=False)
    emb = Embedder(a, _Stub(), smol_tok)
    assert emb.examples is not None and a.examples_for_task == str(f)
    text = smol_tok.decode(emb.tokenize_queries([eedi_row(1)])[0])
    assert text.count("<response>") == 2 and "Nine plus nine\n<response>Adds 9\n\n<instruct>" in text
    model = tiny_llama(seed=0, vocab_size=len(smol_tok), num_hidden_layers=1).eval()
    m = retrieval_eval(model, smol_tok, a, [eedi_row(1), eedi_row(2)], ["1", "2"], ["Adds 1", "Adds 2"], "last_token")
    assert set(m) == {"MAP@25", "Recall@25", "Recall@50", "Recall@75", "Recall@100"}
    with pytest.raises(ValueError, match="decoder-only-icl"):
        KDArgs(eval_data="x", corpus_file="y", embedder_model_class="decoder-only-base", examples_for_task=str(f))


def test_one_default_for_the_query_side_flags(repo_root):
    """The notebooks' parameters for the query side agree with their stage's dataclass, and
    both spellings of the format flag are accepted by every stage."""
    import dataclasses

    import papermill as pm

    from helpers.common.cli import build_parser as eval_parser
    from helpers.mine.hn_mine import build_parser as mine_parser
    from helpers.train.kd_finetune import build_parser as kd_parser
    from helpers.common.notebook import args_from
    names = ("query_instruction_for_retrieval", "use_row_prompts", "max_examples", "target_modules",
             "examples_for_task", "examples_number", "query_max_len", "embedder_batch_size")
    for nb, cls in (("03_kd_finetune", KDArgs), ("04_eval", EvalArgs), ("01_mine_hn", HnMineArgs)):
        declared = pm.inspect_notebook(str(repo_root / "notebooks" / f"{nb}.ipynb"))
        f = {x.name: x.default for x in dataclasses.fields(cls)}
        for n in names:
            if n in declared:
                assert declared[n]["default"] == repr(f[n]), (nb, n, declared[n]["default"], f[n])
    assert "query_instruction_format" in pm.inspect_notebook(str(repo_root / "notebooks/04_eval.ipynb"))
    for parser, base in ((kd_parser(), []), (mine_parser(), ["--embedder_name_or_path", "m", "--input_file", "i",
                                                             "--output_file", "o"]),
                         (eval_parser(EvalArgs, ""), ["--model_name_or_path", "m", "--queries_file", "q",
                                                      "--corpus_file", "c", "--output_dir", "o"])):
        for flag in ("--query_instruction_format", "--query_instruction_format_for_retrieval"):
            assert parser.parse_args(base + [flag, "{}{}"]).query_instruction_format == "{}{}"
    a = args_from(EvalArgs, {"query_instruction_format_for_retrieval": "{}{}", "model_name_or_path": "m",
                             "queries_file": "q", "corpus_file": "c", "output_dir": "o", "unrelated": 1})
    assert a.query_instruction_format == "{}{}"


def test_per_epoch_eval_split_across_ranks_gives_the_one_device_metrics(smol_tok):
    """Issue 26, item 9: each rank embeds rows rank::world, rank 0 re-interleaves them and scores;
    the same metrics as one device (two ranks simulated in turn)."""
    from helpers.train.distributed import interleave
    from helpers.train.kd_finetune import retrieval_eval
    from tests.fixtures.models import tiny_llama
    a = KDArgs(eval_data="x", corpus_file="y", query_max_len=128, passage_max_len=16, embedder_batch_size=2,
               show_progress=False)
    model = tiny_llama(seed=0, vocab_size=len(smol_tok), num_hidden_layers=1).eval()
    rows = [dict(eedi_row(i), pos_ids=[str(i % 5)]) for i in range(1, 8)]
    ids, texts = [str(i) for i in range(5)], [f"Adds {i} to the denominator" for i in range(5)]
    one = retrieval_eval(model, smol_tok, a, rows, ids, texts, "last_token")
    parts = {}

    def gather(rank):
        def g(obj):
            parts[rank] = obj
            return [parts.get(r) for r in range(2)]
        return g
    assert retrieval_eval(model, smol_tok, a, rows, ids, texts, "last_token", rank=1, world=2, gather=gather(1)) == {}
    two = retrieval_eval(model, smol_tok, a, rows, ids, texts, "last_token", rank=0, world=2, gather=gather(0))
    assert two == pytest.approx(one)
    assert [len(parts[r][0]) for r in (0, 1)] == [4, 3] and [len(parts[r][1]) for r in (0, 1)] == [3, 2]
    x = np.arange(7)[:, None] * np.ones((1, 2))
    assert np.array_equal(interleave([x[0::2], x[1::2]]), x) and np.array_equal(interleave([x]), x)
