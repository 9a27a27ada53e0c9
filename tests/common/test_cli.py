"""Stage arguments hold values of their declared types, or one error naming the field."""
import pytest

from helpers.data.prepare_data import PrepareArgs
from helpers.rerank.add_reranker_score import ScoreArgs
from helpers.train.kd_finetune import KDArgs


@pytest.mark.parametrize("kw,msg", [
    ({"learning_rate": "1e-4"}, "KDArgs: learning_rate='1e-4' is str, expected a number or None (a number given as text"),
    ({"seed": "010"}, "KDArgs: seed='010' is str, expected an integer"),
    ({"seed": 4.0}, "KDArgs: seed=4.0 is float, expected an integer"),
    ({"use_lora": "False"}, "KDArgs: use_lora='False' is str, expected true or false"),
    ({"num_train_epochs": True}, "KDArgs: num_train_epochs=True is bool, expected an integer"),
    ({"gradient_checkpointing": "auto"}, "gradient_checkpointing='auto' is str, expected true or false or None"),
])
def test_a_wrongly_typed_value_is_refused_with_its_name(kw, msg):
    with pytest.raises(ValueError) as e:
        KDArgs(**kw)
    assert msg in str(e.value)


def test_right_types_pass_ints_as_floats_and_lists_where_declared():
    a = KDArgs(learning_rate=1, lora_alpha=16, devices=["cpu"], target_modules=["query", "value"], deadline=None)
    assert a.learning_rate == 1 and a.target_modules == "query,value"
    with pytest.raises(ValueError, match="PrepareArgs: seed='7' is str"):
        PrepareArgs(input_dir="i", output_dir="o", seed="7")
    with pytest.raises(ValueError, match="ScoreArgs: reranker_batch_size=1.5 is float"):
        ScoreArgs(reranker_batch_size=1.5)
    ScoreArgs(reranker_batch_size=4)          # fields whose default is None take None


def test_peak_memory_is_reported_only_where_there_is_cuda(monkeypatch):
    import torch
    from helpers.common.cli import peak_memory_line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert peak_memory_line() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda i: (i + 1) * 2 ** 30)
    assert peak_memory_line().endswith("cuda:0 1.00 GiB, cuda:1 2.00 GiB")
