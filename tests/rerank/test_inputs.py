"""Token layout and truncation of the rerankers (FlagEmbedding's rules), on hand-made texts."""
import pytest
import torch
from transformers import AutoTokenizer

from helpers.common.tensors import last_real_index, pad
from helpers.rerank.inputs import DecoderLayout, EncoderLayout, cut_second, format_text
from tests.fixtures.models import gemma_tokenizer_dir


@pytest.fixture(scope="module")
def gemma_tok():
    return AutoTokenizer.from_pretrained(gemma_tokenizer_dir())


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_format_text():
    assert format_text("A: ", "{}{}", "q") == "A: q"
    assert format_text("inst", "<i>{}\n<q>{}", "q") == "<i>inst\n<q>q"
    assert format_text(None, "{}{}", "q") == "q"


def test_cut_second_only_cuts_the_second_part():
    assert cut_second([1, 2], [3, 4, 5], 10) == [3, 4, 5]
    assert cut_second([1, 2], [3, 4, 5], 4) == [3, 4]
    assert cut_second([1, 2], [3, 4, 5], 4, side="left") == [4, 5]
    assert cut_second([1, 2, 3, 4], [5, 6], 3) == []        # excess beyond the second part


def test_short_pair_reads_bos_a_sep_b_sep_prompt(gemma_tok):
    lay = DecoderLayout(gemma_tok, max_length=64, prompt="Is B right?")
    (pre,), ((suf,),) = lay.encode(["A: two plus two"], [["B: four"]])
    assert pre == [gemma_tok.bos_token_id] + ids(gemma_tok, "A: two plus two")
    assert suf == ids(gemma_tok, "\n") + ids(gemma_tok, "B: four") + ids(gemma_tok, "\n") + ids(gemma_tok, "Is B right?")
    assert gemma_tok.decode(pre + suf) == "<bos>A: two plus two\nB: four\nIs B right?"


def test_long_query_truncated_to_three_quarters(gemma_tok):
    lay = DecoderLayout(gemma_tok, max_length=40, prompt="P")
    q = "A: " + "seven " * 100
    (pre,), ((suf,),) = lay.encode([q], [["B: short"]])
    assert lay.query_max_length == 30
    assert pre == [gemma_tok.bos_token_id] + ids(gemma_tok, q)[:30]
    # 31 + 1 (sep) + 3 (B: short) fits in 40 + 1 + 1: the passage is whole
    assert suf == ids(gemma_tok, "\n") + ids(gemma_tok, "B: short") + ids(gemma_tok, "\n") + ids(gemma_tok, "P")


def test_long_passage_cut_so_the_pair_fits(gemma_tok):
    lay = DecoderLayout(gemma_tok, max_length=40, prompt="Answer yes or no.")
    q, p = "A: " + "seven " * 100, "B: " + "eight " * 100
    (pre,), ((suf,),) = lay.encode([q], [[p]])
    sep, prompt = ids(gemma_tok, "\n"), ids(gemma_tok, "Answer yes or no.")
    limit = 40 + len(sep) + len(prompt)
    second = suf[:len(suf) - len(sep) - len(prompt)]
    assert len(pre) + len(second) == limit
    assert second == (sep + ids(gemma_tok, p)[:40])[:limit - len(pre)]
    assert suf[len(second):] == sep + prompt
    assert len(pre) + len(suf) == 40 + 2 * len(sep) + 2 * len(prompt)


def test_query_max_length_override_and_prefix_longer_than_limit(gemma_tok):
    lay = DecoderLayout(gemma_tok, max_length=10, query_max_length=50, prompt="P")
    (pre,), ((suf,),) = lay.encode(["A: " + "nine " * 80], [["B: ten"]])
    assert len(pre) == 51
    # the whole second part is cut away (transformers' only_second); sep + prompt still follow
    assert suf == ids(gemma_tok, "\n") + ids(gemma_tok, "P")


def test_no_bos_when_bos_equals_pad(gemma_tok):
    tok = AutoTokenizer.from_pretrained(gemma_tokenizer_dir())
    tok.pad_token = tok.bos_token
    (pre,), _ = DecoderLayout(tok, 32, prompt="P").encode(["A: q"], [["B: p"]])
    assert pre == ids(tok, "A: q")


def test_encoder_layout_bert_template():
    from helpers.common.models import resolve_model
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:all-minilm-l6-v2"))
    lay = EncoderLayout(tok, max_length=16)
    [[(got, types)]] = lay.encode(["hello world how are you"], [["a long passage with many many words in it"]])
    q = ids(tok, "hello world how are you")
    p = ids(tok, "a long passage with many many words in it")
    assert got == [tok.cls_token_id] + q + [tok.sep_token_id] + p[:16 - 3 - len(q)] + [tok.sep_token_id]
    assert types == [0] * (len(q) + 2) + [1] * (16 - 2 - len(q))
    short = tok("hi", "there")
    assert lay.encode(["hi"], [["there"]])[0][0] == (short["input_ids"], short["token_type_ids"])


def test_pad_and_last_real_index():
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0, side="left", multiple_of=8)
    assert ids.shape == (2, 8) and ids[1].tolist() == [0] * 7 + [8]
    assert last_real_index(mask).tolist() == [7, 7]
    ids, mask = pad([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert last_real_index(mask).tolist() == [2, 0]
    middle = torch.tensor([[0, 1, 1, 0, 1, 1, 0]])
    assert last_real_index(middle).tolist() == [5]
    with pytest.raises(ValueError, match="padding side"):
        pad([[1]], 0, side="middle")
