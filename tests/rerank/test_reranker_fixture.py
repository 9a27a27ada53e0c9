"""FlagEmbedding 1.4.2's own token ids and scores (demo:gemma-3-270m, fp32, CPU): we match them.

The default run scores a subset (``EEDI_RERANK_FIXTURE_QUERIES`` queries, default 2 x 16 pairs
for each fast path, 1 x 16 for the slow plain path); set it to 32 for all 512 pairs.
"""
import functools
import json
import os

import pytest

from helpers.rerank.inputs import DecoderLayout, format_text
from tests.conftest import SHARED

N_QUERIES = int(os.environ.get("EEDI_RERANK_FIXTURE_QUERIES", "2"))
FAST = {"plain": dict(yes_only=False, sort_by_length=False, share_prefix=False),
        "yes_only": dict(yes_only=True, sort_by_length=False, share_prefix=False),
        "yes_only+sort": dict(yes_only=True, sort_by_length=True, share_prefix=False),
        "all (yes_only+sort+shared prefix)": dict(yes_only=True, sort_by_length=True, share_prefix=True)}


@functools.lru_cache(maxsize=1)
def load_fixture(path):
    return json.loads(path.read_text())


@pytest.fixture
def fixture(shared_dir):
    path = shared_dir / "fixtures" / "flag_reranker_gemma3_270m.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return load_fixture(path)


def groups(fx, n_queries):
    qs, ps, ref = [], [], []
    for (q, p), meta, s in zip(fx["pairs"], fx["pair_meta"], fx["scores"]):
        if meta["query_index"] >= n_queries:
            continue
        if not qs or qs[-1] != q:
            qs.append(q), ps.append([]), ref.append([])
        ps[-1].append(p)
        ref[-1].append(s)
    return qs, ps, ref


def test_token_ids_equal_flagembedding(fixture):
    from transformers import AutoTokenizer
    from helpers.common.models import resolve_model
    cfg = fixture["config"]
    tok = AutoTokenizer.from_pretrained(resolve_model("demo:gemma-3-270m"))
    lay = DecoderLayout(tok, cfg["max_length"], None, cfg["prompt"])
    assert lay.query_max_length == fixture["query_max_length_effective"]
    qs = [format_text(cfg["query_instruction_for_rerank"], cfg["query_instruction_format"], q)
          for q, _ in fixture["pairs"]]
    ps = [[format_text(cfg["passage_instruction_for_rerank"], cfg["passage_instruction_format"], p)]
          for _, p in fixture["pairs"]]
    assert [q for q, _ in fixture["formatted_pairs"]] == qs
    pre, suf = lay.encode(qs, ps)
    ours = [a + b[0] for a, b in zip(pre, suf)]
    assert ours == fixture["token_ids"]          # all 512, exactly
    assert tok("Yes", add_special_tokens=False)["input_ids"][0] == fixture["yes_token_id"]


@pytest.fixture(scope="module")
def reranker():
    from helpers.rerank.reranker import LLMReranker
    path = SHARED / "fixtures" / "flag_reranker_gemma3_270m.json"
    if not path.exists():     # module scope: set up before the function-scoped shared_dir skip
        pytest.skip(f"{path} not found: the FlagEmbedding fixtures are only on the project machines")
    cfg = load_fixture(path)["config"]
    return LLMReranker("demo:gemma-3-270m", prompt=cfg["prompt"], max_length=cfg["max_length"],
                       use_fp16=False, batch_size=cfg["batch_size"], devices="cpu",
                       query_instruction_for_rerank=cfg["query_instruction_for_rerank"],
                       passage_instruction_for_rerank=cfg["passage_instruction_for_rerank"],
                       show_progress=False)


@pytest.mark.integration
@pytest.mark.parametrize("name", list(FAST))
def test_scores_equal_flagembedding(shared_dir, fixture, reranker, name):
    n = N_QUERIES if name != "plain" or N_QUERIES >= 32 else max(1, N_QUERIES // 2)
    qs, ps, ref = groups(fixture, n)
    reranker.fast = dict(FAST[name])
    reranker._checked = True                     # the self-check has its own tests
    got = reranker.score_groups(qs, ps)
    diff = max(abs(a - b) for ga, gb in zip(got, ref) for a, b in zip(ga, gb))
    print(f"{name}: {sum(map(len, ref))} pairs, max |ours - FlagEmbedding| = {diff:.2e}")
    assert diff <= 1e-3
