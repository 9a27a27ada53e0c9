"""The on-disk embedding cache: keyed by model files, settings and token ids; never stale, never half-written."""
import logging
import os

import numpy as np

from helpers.embed.cache import EmbeddingCache, ids_digest
from helpers.embed.args import EmbedderArgs
from helpers.embed.embedder import Embedder
from tests.fixtures.models import save_tiny_llama


def _get(cache, ids):
    return cache.get(cache.path(ids), len(ids))


def _model_folder(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"weights-1")
    return d


def test_ids_digest_sees_ids_and_boundaries():
    assert ids_digest([[1, 2], [3]]) == ids_digest([[1, 2], [3]])
    assert ids_digest([[1, 2], [3]]) != ids_digest([[1], [2, 3]])
    assert ids_digest([[1, 2], [3]]) != ids_digest([[1, 2], [4]])


def test_hit_miss_by_ids_settings_and_model_files(tmp_path):
    m = _model_folder(tmp_path)
    cache = EmbeddingCache(tmp_path / "c", [str(m)], {"pooling": "last_token"})
    ids, emb = [[1, 2, 3], [4, 5]], np.arange(8, dtype=np.float32).reshape(2, 4)
    assert _get(cache, ids) is None
    cache.put(cache.path(ids), emb)
    np.testing.assert_array_equal(_get(cache, ids), emb)
    assert _get(cache, [[1, 2, 3], [4, 6]]) is None
    assert _get(EmbeddingCache(tmp_path / "c", [str(m)], {"pooling": "mean"}), ids) is None
    (m / "model.safetensors").write_bytes(b"weights-22")               # retrained: other size
    assert _get(EmbeddingCache(tmp_path / "c", [str(m)], {"pooling": "last_token"}), ids) is None
    assert not list((tmp_path / "c").glob(".*tmp"))                        # no temporary left behind


def test_unreadable_or_misshaped_entry_is_ignored(tmp_path, caplog):
    m = _model_folder(tmp_path)
    cache = EmbeddingCache(tmp_path / "c", [str(m)], {})
    ids = [[1], [2], [3]]
    cache.path(ids).parent.mkdir(parents=True)
    cache.path(ids).write_bytes(b"not an npy file")
    with caplog.at_level(logging.WARNING):
        assert _get(cache, ids) is None
    assert "unreadable" in caplog.text
    np.save(cache.path(ids), np.zeros((2, 4), dtype=np.float32))
    assert _get(cache, ids) is None and "holds shape" in caplog.text


def test_embedder_reads_what_it_wrote_and_skips_models_handed_in(tmp_path, caplog):
    folder = save_tiny_llama(tmp_path / "tiny")
    cfg = dict(model_name_or_path=folder, query_max_len=32, passage_max_len=16,
               embedding_cache=str(tmp_path / "cache"))
    texts = ["adds the numerators", "divides instead of multiplying", "confuses area and perimeter"]
    first = Embedder(EmbedderArgs(**cfg), show_progress=False).encode_corpus(texts)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = Embedder(EmbedderArgs(**cfg), show_progress=False)
    with caplog.at_level(logging.INFO, logger="helpers.embed.embedder"):
        np.testing.assert_array_equal(again.encode_corpus(texts), first)
    assert "from the cache" in caplog.text
    for f in (tmp_path / "cache").glob("*.npy"):
        os.remove(f)
    handed = Embedder(EmbedderArgs(**cfg), model=again.model, tokenizer=again.tokenizer, show_progress=False)
    assert handed.cache is None                                      # a model in training is never cached
    handed.encode_corpus(texts)
    assert not list((tmp_path / "cache").glob("*.npy"))
