"""Round 2 from an adapter folder: merge_adapter and load_embedding_model keep round 1's adapter.

A student may be a previous round's ``lora_epoch_n`` (an adapter folder) instead of its merged
model. Round 2's merged model, and round 2's adapter loaded as a model, must then equal round 2
trained from round 1's merged model, and differ from round 2 merged into the plain base.
Built twice: on a tiny random Llama (fast) and on demo:smollm2-135m-instruct (integration).
"""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers.embed.args import EmbedderArgs
from helpers.embed.embedder import Embedder
from helpers.embed.loading import load_embedding_model, save_tokenizer
from helpers.train.merge import merge_adapter
from helpers.common.models import resolve_model
from tests.fixtures.models import save_tiny_llama

SMOL = "demo:smollm2-135m-instruct"
TEXTS = ["apple misconception about fractions", "the student adds the denominators",
         "a negative times a negative is negative"]


def _nonzero_lora(peft_model, seed):
    """Give every LoRA matrix small seeded non-zero values (B starts at zero: no effect)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _lora(model, targets, seed):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    m = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    _nonzero_lora(m, seed)
    return m


def _tiny_base(root):
    return save_tiny_llama(root / "base")


@pytest.fixture(scope="module", params=["tiny", pytest.param("demo", marks=pytest.mark.integration)])
def rounds(request, tmp_path_factory):
    """base name, round-1 adapter, round-1 merged model, round-2 adapter (trained on round 1's adapter)."""
    from transformers import AutoModel
    root = tmp_path_factory.mktemp(f"rounds_{request.param}")
    base_name = _tiny_base(root) if request.param == "tiny" else SMOL
    _, tok = load_embedding_model(base_name, dtype=torch.float32)
    r1_adapter, r1_merged, r2_adapter = root / "r1_lora", root / "r1_merged", root / "r2_lora"

    base = AutoModel.from_pretrained(resolve_model(base_name), dtype=torch.float32)
    r1 = _lora(base, ["q_proj", "v_proj", "down_proj"], seed=1)
    r1.peft_config["default"].base_model_name_or_path = base_name      # the alias, as a user gives it
    r1.save_pretrained(str(r1_adapter), safe_serialization=True)
    save_tokenizer(tok, r1_adapter, add_eos=True)
    assert not (r1_adapter / "config.json").exists()
    r1.merge_and_unload().save_pretrained(str(r1_merged), safe_serialization=True)
    save_tokenizer(tok, r1_merged, add_eos=True)
    del base, r1

    # round 2 as kd_finetune runs it with the round-1 adapter folder as the student
    student, tok2 = load_embedding_model(str(r1_adapter), dtype=torch.float32)
    r2 = _lora(student, ["k_proj", "o_proj", "up_proj"], seed=2)
    r2.save_pretrained(str(r2_adapter), safe_serialization=True)
    save_tokenizer(tok2, r2_adapter, add_eos=True)
    del student, r2
    return dict(base=base_name, r1_adapter=str(r1_adapter), r1_merged=str(r1_merged),
                r2_adapter=str(r2_adapter), tok=tok, root=root)


def _embed(path):
    e = Embedder(EmbedderArgs(model_name_or_path=str(path), embedder_model_class="decoder-only-icl",
                              query_instruction_for_retrieval="Find the misconception.",
                              query_max_len=32, passage_max_len=32, embedder_batch_size=8,
                              devices="cpu", use_fp16=False), show_progress=False)
    return np.concatenate([e.encode_corpus(TEXTS), e.encode_queries(TEXTS)])


@pytest.fixture(scope="module")
def merged(rounds):
    """merged(key) -> folder of round 2 merged (once) into the student named by key."""
    students = {"from_adapter": rounds["r1_adapter"], "from_merged": rounds["r1_merged"],
                "from_base": rounds["base"]}
    done = {}

    def get(key):
        if key not in done:
            target = rounds["root"] / f"merged_{key}"
            merge_adapter(students[key], rounds["r2_adapter"], target, rounds["tok"], add_eos=True)
            done[key] = target
        return done[key]
    return get


def test_round2_from_an_adapter_folder_merges_like_from_the_merged_round1(merged):
    a, b, c = (load_file(str(merged(k) / "model.safetensors")) for k in ("from_adapter", "from_merged", "from_base"))
    assert a.keys() == b.keys() and not any("lora" in k for k in a)
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    # round 1 changed q/v/down: merging round 2 into the plain base loses it (the test can fail)
    assert max((a[k].float() - c[k].float()).abs().max().item() for k in a) > 1e-3
    ea, eb, ec = (_embed(merged(k)) for k in ("from_adapter", "from_merged", "from_base"))
    assert np.abs(ea - eb).max() < 1e-5
    assert np.abs(ea - ec).max() > 1e-3


def test_round2_adapter_names_round1_adapter_as_base_and_loads_onto_it(rounds, merged):
    cfg = json.loads((rounds["root"] / "r2_lora" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == resolve_model(rounds["r1_adapter"])
    # the round-2 adapter folder as a model: round 1 and round 2 merged, like the merged folder
    assert np.abs(_embed(rounds["r2_adapter"]) - _embed(merged("from_merged"))).max() < 1e-5


def test_a_merged_folder_is_current_only_for_the_adapter_it_was_merged_from(tmp_path):
    import json
    import os
    from helpers.common.models import files_fingerprint
    from helpers.train.merge import MERGED_FROM, merged_is_current
    adapter, merged = tmp_path / "lora_epoch_1", tmp_path / "merged_model_lora_epoch_1"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"a")
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    assert not merged_is_current(merged, adapter)                   # an old folder that records nothing
    (merged / MERGED_FROM).write_text(json.dumps({"adapter": files_fingerprint([adapter])}))
    assert merged_is_current(merged, adapter)
    st = os.stat(adapter / "adapter_model.safetensors")              # the adapter trained again
    os.utime(adapter / "adapter_model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert not merged_is_current(merged, adapter)


def test_a_merge_that_would_not_fit_the_ram_is_done_in_float16(caplog):
    import logging
    from helpers.train.merge import merge_dtype
    caplog.set_level(logging.INFO)
    assert merge_dtype(28 * 10 ** 9, 30 * 10 ** 9) == "float16"       # a 7B base stored in float32 on Kaggle
    assert "merge in float16" in caplog.text
    assert merge_dtype(14 * 10 ** 9, 30 * 10 ** 9) == "auto"          # stored fp16: as stored
    assert merge_dtype(10 ** 8, 0) == "auto"                          # RAM unknown: as stored


def test_without_a_merge_the_chosen_epochs_adapter_is_copied_once_and_again_when_it_changed(tmp_path):
    import json
    import os
    from helpers.train.merge import MERGED_FROM, choose_adapter
    a = tmp_path / "lora_epoch_2"
    a.mkdir()
    (a / "adapter_config.json").write_text("{}")
    (a / "adapter_model.safetensors").write_bytes(b"w")
    target = tmp_path / "chosen_adapter"
    choose_adapter(a, target, 2, "best")
    assert sorted(os.listdir(target)) == sorted(["adapter_config.json", "adapter_model.safetensors", MERGED_FROM])
    assert json.loads((target / MERGED_FROM).read_text())["epoch"] == 2
    mtime = (target / MERGED_FROM).stat().st_mtime_ns
    choose_adapter(a, target, 2, "best")                               # current: left as it is
    assert (target / MERGED_FROM).stat().st_mtime_ns == mtime
    (a / "adapter_model.safetensors").write_bytes(b"retrained")
    choose_adapter(a, target, 2, "best")
    assert (target / "adapter_model.safetensors").read_bytes() == b"retrained"
