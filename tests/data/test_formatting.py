"""Query formatting: instruction, literal backslash-n, ICL examples, truncation rule, EOS."""
import pytest

from helpers.data.formatting import (examples_prefix, format_example, instructed_query, row_instruction,
                                select_examples, tokenize_icl_queries, tokenize_texts)
from helpers.common.prompts import ICL_SUFFIX


def test_instructed_query_literal_backslash_n():
    # what a shell passes for '<instruct>{}\n<query>{}': a backslash and an n
    fmt = "<instruct>{}\\n<query>{}"
    assert instructed_query("2+2?", "Find it.", fmt) == "<instruct>Find it.\n<query>2+2?"
    assert instructed_query("2+2?", "Find it.", "<instruct>{}\n<query>{}") == "<instruct>Find it.\n<query>2+2?"
    assert instructed_query("2+2?", None, fmt) == "2+2?"
    with pytest.raises(ValueError, match="two"):
        instructed_query("q", "i", "{}")


def test_row_prompt_overrides_global_instruction():
    assert row_instruction({"prompt": "row one"}, "global") == "row one"
    assert row_instruction({"prompt": ""}, "global") == "global"
    assert row_instruction({}, "global") == "global"


def test_examples_prefix_exact_text():
    ex = [{"query": "Q1", "response": "R1"}, {"query": "Q2", "response": "R2", "instruct": "own"}]
    want = ("<instruct>I\n<query>Q1\n<response>R1\n\n"
            "<instruct>own\n<query>Q2\n<response>R2\n\n")
    assert examples_prefix(ex, "I") == want
    assert examples_prefix([], "I") == ""
    assert format_example("I", "Q", "R", "<instruct>{}\\n<query>{}\\n<response>{}") == \
        "<instruct>I\n<query>Q\n<response>R"


EXAMPLES = {
    "by_construct": {"c1": [{"query_id": "q1", "query": "A", "response": "ra"},
                            {"query_id": "q2", "query": "B", "response": "rb"}]},
    "by_subject": {"s1": [{"query_id": "q3", "query": "C", "response": "rc"},
                          {"query_id": "q1", "query": "A", "response": "ra"}]},
    "all": [{"query_id": "q4", "query": "D", "response": "rd"},
            {"query_id": "q3", "query": "C", "response": "rc"}],
}


def test_select_examples_tiers_never_self_deterministic():
    row = {"query_id": "q1", "query": "A", "construct_id": "c1", "subject_id": "s1"}
    got = select_examples(row, EXAMPLES, n=3)
    assert [e["query_id"] for e in got] == ["q2", "q3", "q4"]        # construct, subject, any
    assert select_examples(row, EXAMPLES, n=3) == got
    assert len(select_examples(row, EXAMPLES, n=10)) == 3             # no duplicates, no self
    # same text under another id is still "the query itself"
    row2 = {"query_id": "zz", "query": "B", "construct_id": "c1", "subject_id": "s1"}
    assert "q2" not in [e["query_id"] for e in select_examples(row2, EXAMPLES, n=4)]
    # unknown construct/subject: falls through to "all"
    assert [e["query_id"] for e in select_examples({"query_id": "x", "query": "X"}, EXAMPLES, n=1)][0] in {"q3", "q4"}
    assert select_examples(row, EXAMPLES, n=0) == []


@pytest.fixture(scope="module")
def tok():
    from helpers.embed.loading import _load_tokenizer
    from helpers.common.models import resolve_model
    return _load_tokenizer(resolve_model("demo:smollm2-135m-instruct"), False)


def test_icl_short_query_is_prefix_query_suffix(tok):
    text = "<instruct>Find.\n<query>What is 2+2?"
    ids = tokenize_icl_queries(tok, [text], max_length=64, prefixes="EX\n\n")[0]
    assert ids == tok("EX\n\n" + text + ICL_SUFFIX)["input_ids"]
    assert tok.decode(ids).endswith("\n<response>")


def test_icl_long_query_truncated_before_suffix(tok):
    text = "<instruct>Find.\n<query>" + " seven" * 200
    max_length = 40
    ids = tokenize_icl_queries(tok, [text], max_length=max_length)[0]
    len_1 = len(tok("<s>", add_special_tokens=False)["input_ids"])
    len_2 = len(tok(ICL_SUFFIX + "</s>", add_special_tokens=False)["input_ids"])
    cut = tok(text, add_special_tokens=False)["input_ids"][: max_length - len_1 - len_2]
    assert ids == tok(tok.decode(cut) + ICL_SUFFIX)["input_ids"]
    assert len(ids) < max_length
    with pytest.raises(ValueError, match="no room"):
        tokenize_icl_queries(tok, [text], max_length=3)


def test_append_eos_once(tok):
    eos = tok.eos_token_id
    a = tokenize_texts(tok, ["hello there"], 8, append_eos=True)[0]
    assert a[-1] == eos and a.count(eos) == 1
    assert len(tokenize_texts(tok, ["x " * 50], 8, append_eos=True)[0]) == 8
    b = tokenize_icl_queries(tok, ["q"], 32, append_eos=True)[0]
    assert b[-1] == eos and b[-2] != eos
    # a text that already ends in EOS gets no second one
    c = tokenize_texts(tok, ["hi" + tok.eos_token], 8, append_eos=True)[0]
    assert c.count(eos) == 1


# ----------------------------------------------------------------------------- inputs checked before a model loads
def test_bad_formats_are_refused_when_the_arguments_are_built():
    from helpers.embed.args import EmbedderArgs
    with pytest.raises(ValueError, match=r"query_instruction_format '\{\}' must contain exactly 2"):
        EmbedderArgs(model_name_or_path="m", query_instruction_format="{}")
    with pytest.raises(ValueError, match="examples_instruction_format .* must contain exactly 3"):
        EmbedderArgs(model_name_or_path="m", examples_instruction_format="<instruct>{}\\n<query>{}")
    EmbedderArgs(model_name_or_path="m", query_instruction_format="<instruct>{}\\n<query>{}")


@pytest.mark.parametrize("text,field,msg", [
    ("{", None, "not JSON"),
    ("[]", None, "expected a JSON object"),
    ('{"all": {}}', "all", "expected a list of examples"),
    ('{"by_construct": []}', "by_construct", "expected an object"),
    ('{"by_subject": {"3": [{"query": "q"}]}}', "by_subject.3[0]", "string 'query' and 'response'"),
])
def test_a_bad_examples_file_is_one_error_naming_it(tmp_path, text, field, msg):
    from helpers.common.io_utils import InputError
    from helpers.data.formatting import load_examples
    p = tmp_path / "examples.json"
    p.write_text(text)
    with pytest.raises(InputError, match=msg) as e:
        load_examples(p)
    assert e.value.field == field and str(p) in str(e.value)


def test_the_embedder_reads_its_examples_before_loading_a_model(tmp_path, monkeypatch):
    from helpers.common.io_utils import InputError
    from helpers.embed import embedder
    from helpers.embed.args import EmbedderArgs

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the examples were checked")
    monkeypatch.setattr(embedder, "load_embedding_model", no_load)
    bad = tmp_path / "examples.json"
    bad.write_text('{"all": [1]}')
    with pytest.raises(InputError, match=r"all\[0\]"):
        embedder.Embedder(EmbedderArgs(model_name_or_path="demo:smollm2-135m-instruct", examples_for_task=str(bad)))


def test_the_rerankers_adapter_is_checked_before_its_base_is_resolved(tmp_path, monkeypatch):
    from helpers.common import models
    from helpers.rerank.scorers import load_pair_model

    def no_resolve(*a, **k):
        raise AssertionError("the base was resolved (a GGUF converted) before the adapter was checked")
    monkeypatch.setattr(models, "resolve_model", no_resolve)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_pair_model("demo:smollm2-135m-instruct", max_length=64, peft_adapter=str(tmp_path))
