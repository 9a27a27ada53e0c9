"""The submission's second stage: each row's top k re-ordered by the reranker
(:func:`helpers.eval.cascade.rerank_order`, the rule the evaluation measured), after a time estimate
and the memory plan are printed. Called by :func:`helpers.eval.submission.make_submission`."""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from helpers.eval.cascade import RerankStage, rerank_order, score_in_bands

log = logging.getLogger(__name__)

HIDDEN_TEST_ROWS = 1800         # about the wrong answers of Eedi's hidden test (Kaggle's rerun)


def time_estimate(stage: RerankStage, queries: Sequence[str], texts: Sequence[str], n_rows: int,
                  device: str, params: Optional[float] = None, gpu: Optional[str] = None) -> Optional[float]:
    """Seconds to rerank ``n_rows`` rows x ``stage.top_k`` candidates on one ``device``, an estimate:
    tokens from characters (4 a token) of these ``queries`` and candidate ``texts``, the query run once
    per row with a shared prefix (a decoder's fast path) else once a pair, 2 x parameters FLOPs a
    token at :data:`helpers.common.memory.GPU_TFLOPS` (assumed). None on a CPU or an unknown GPU
    (the progress bar gives the rate)."""
    from helpers.common.memory import GPU_TFLOPS
    if not str(device).startswith("cuda") or params is None:
        return None
    name = gpu or ""
    tflops = next((v for k, v in GPU_TFLOPS.items() if k in name.upper()), None)
    if tflops is None:
        return None
    q = float(np.mean([len(x) for x in queries])) / 4 if queries else 100.0
    p = float(np.mean([len(x) for x in texts])) / 4 if texts else 20.0
    extra = 40                                  # prompt and separators
    shared = stage.reranker_model_class == "decoder-only-base" and stage.share_query_prefix
    per_row = (q + stage.top_k * (p + extra)) if shared else stage.top_k * (q + p + extra)
    per_row = min(per_row, stage.top_k * (stage.reranker_max_length + extra))
    return n_rows * per_row * 2 * params / (tflops * 1e12)


def _estimate_line(stage: RerankStage, queries, texts) -> str:
    from helpers.common.devices import parse_devices
    devices = parse_devices(stage.devices)
    try:
        from helpers.common.memory import arch_of
        params = arch_of(stage.reranker_name_or_path).linear_params     # FLOPs: the matrix multiplies
    except Exception:       # a model without a readable config.json: no estimate
        params = None
    gpu = None
    if devices[0].startswith("cuda"):
        import torch
        gpu = torch.cuda.get_device_name(devices[0])
    n = len(devices)
    parts = []
    for rows, what in ((len(queries), "these rows"), (HIDDEN_TEST_ROWS, f"~{HIDDEN_TEST_ROWS} rows (hidden test)")):
        sec = time_estimate(stage, queries, texts, rows, devices[0], params, gpu)
        if sec is not None:
            parts.append(f"{what}: {rows * stage.top_k:,} pairs, ~{sec / n / 60:.1f} min on {n} x {gpu}")
    if not parts:
        return (f"rerank time: {len(queries) * stage.top_k:,} pairs on {', '.join(devices)}; no estimate "
                f"(CPU or a GPU without an assumed throughput): the progress bar shows the rate")
    return "rerank time (estimate: characters / 4 tokens, assumed throughput helpers.common.memory.GPU_TFLOPS): " \
        + "; ".join(parts)


def rerank_rows(stage: RerankStage, queries: Sequence[str], ranked: Sequence[Sequence[str]], embedder_scores,
                texts: dict, reranker=None) -> list[list[str]]:
    """The submission's second stage: every row's first ``top_k`` ids re-ordered by the reranker
    (:func:`rerank_order`). The time estimate is printed, then (CUDA) the memory plan, before the
    reranker loads."""
    from helpers.common.memory import free_memory
    free_memory()                                   # the embedder's memory, before the reranker loads
    heads = [list(x[:stage.top_k]) for x in ranked]
    line = _estimate_line(stage, queries, [texts[i] for h in heads[:200] for i in h])
    print(line, flush=True)
    log.info(line)
    if reranker is None:
        from helpers.rerank.args import build_reranker
        reranker = build_reranker(stage)            # prints the memory plan on CUDA before loading
    scores, seconds = score_in_bands(reranker, queries, ranked, texts, [stage.top_k])
    emb = [list(map(float, s)) for s in embedder_scores] if stage.alpha is not None else [None] * len(ranked)
    log.info("reranked %d rows x top %d in %.1fs", len(ranked), stage.top_k, seconds[stage.top_k])
    return [rerank_order(list(x), s, stage.top_k, e, stage.alpha) for x, s, e in zip(ranked, scores, emb)]


