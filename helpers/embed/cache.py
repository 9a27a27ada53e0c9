"""Embeddings already computed, on disk: a step that embeds the same texts with the same model reads them.

A run's steps embed some things twice: the zero-shot corpus (baseline, then mining round 1), the
round-1 model's test queries and corpus (mining round 2, then the comparison), the final model's
corpus (its evaluation, then the submission). With ``embedding_cache`` set to one folder for the
whole run, the second time is a read.

An entry is one ``.npy`` named by the SHA-256 of everything the vectors depend on: the model's files
(for each folder of the model and its adapter chain: every file's name, size and mtime, as
``04_eval``'s ``reuse_results``), the embedding settings (class, pooling, normalisation, dtype,
4-bit, device type) and the token ids themselves (so the texts, instructions, truncation and
tokenizer are all in it). Only for models the embedder loads from files; a model handed in as an
object (training's per-epoch evaluation) is never cached. Written atomically (a temporary file, then
a rename); an unreadable or mis-shaped entry is ignored with a warning and computed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from helpers.common.io_utils import atomic_path
from helpers.common.models import folder_files

log = logging.getLogger(__name__)


def ids_digest(inputs: Sequence[Sequence[int]]) -> str:
    """SHA-256 of token-id lists (their lengths and their ids, in order)."""
    h = hashlib.sha256(np.asarray([len(x) for x in inputs], dtype=np.int64).tobytes())
    for x in inputs:
        h.update(np.asarray(x, dtype=np.int64).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """``path(inputs)`` names the entry of some token ids; ``get(path, n)`` / ``put(path, vectors)``
    read and write it, in ``folder``, for one model and its settings."""

    def __init__(self, folder, folders: Sequence[str], settings: dict):
        self.folder = Path(folder)
        files = [[str(Path(f).resolve()), folder_files(f)] for f in folders]
        self.model_key = json.dumps({"model_files": files, "settings": settings}, sort_keys=True, default=str)

    def path(self, inputs) -> Path:
        key = hashlib.sha256(f"{self.model_key}\x00{ids_digest(inputs)}".encode("utf-8")).hexdigest()
        return self.folder / f"{key[:40]}.npy"

    def get(self, p: Path, n: int) -> Optional[np.ndarray]:
        """The ``n`` vectors stored at ``p``; None when absent, unreadable or of another shape."""
        if not p.is_file():
            return None
        try:
            emb = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("embedding cache %s unreadable (%s): computed again", p, e)
            return None
        if emb.ndim != 2 or emb.shape[0] != n:
            log.warning("embedding cache %s holds shape %s for %d texts: computed again", p, emb.shape, n)
            return None
        return emb

    def put(self, p: Path, emb: np.ndarray) -> None:
        try:
            with atomic_path(p) as tmp, open(tmp, "wb") as f:
                np.save(f, emb, allow_pickle=False)
        except OSError as e:       # a full disk costs the cache entry, not the run
            log.warning("embedding cache: could not write %s (%s)", p, e)
