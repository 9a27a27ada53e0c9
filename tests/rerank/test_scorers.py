"""The common scorer interface (helpers.rerank.scorers): ``layout.pairs`` -> ``scorer.inputs`` ->
``scorer(...)`` gives the scores of the scoring stage's rerankers, for both classes."""
import pytest
import torch

from helpers.rerank.reranker import load_reranker
from helpers.rerank.scorers import KINDS, kind_of, load_pair_model

QS = ["A: how many sides has a hexagon", "A: what is 7 times 8, the student answered 54 after adding"]
PS = [["B: six", "B: eight sides because octagon"], ["B: multiplies correctly", "B: x", "B: adds instead"]]


def test_kinds_are_data():
    assert KINDS["encoder-only-base"].task_type == "SEQ_CLS" and KINDS["encoder-only-base"].saved_whole
    assert KINDS["decoder-only-base"].task_type is None and not KINDS["decoder-only-base"].saved_whole
    with pytest.raises(ValueError, match="decoder-only-base"):
        kind_of("decoder-only-layerwise")


@pytest.mark.parametrize("cls", ["decoder-only-base", "encoder-only-base"])
def test_scorer_on_padded_pairs_equals_the_reranker(cls, tiny_gemma_reranker_dir, tiny_bert_cross_encoder_dir):
    path = tiny_gemma_reranker_dir if cls == "decoder-only-base" else tiny_bert_cross_encoder_dir
    parts = load_pair_model(path, cls, max_length=32, prompt="Yes or no?")
    rer = load_reranker(path, cls, query_instruction_for_rerank=None, passage_instruction_for_rerank=None,
                        prompt="Yes or no?", max_length=32, batch_size=2, devices="cpu", show_progress=False)
    assert (rer.pad_id, type(rer.layout)) == (parts.pad_id, type(parts.layout))
    scorer = parts.scorer()
    pairs = [p for g in parts.layout.pairs(QS, PS) for p in g]
    with torch.no_grad():
        got = scorer(**scorer.inputs(pairs)).tolist()
    assert got == pytest.approx([v for g in rer.score_groups(QS, PS) for v in g], abs=1e-4)
