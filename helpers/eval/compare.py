"""Compare several models on the same test queries: evaluate each (stage 04's
:func:`~helpers.eval.evaluate.run_evaluation`, a saved result reused when nothing changed), then
tabulate them with bootstrap intervals and paired differences against a reference.

:func:`evaluate_models` writes ``comparison.csv`` / ``comparison.json``: each model's bootstrap 95%
interval of MAP@25 and, against a ``reference_model``, the per-query paired difference of AP@25,
Recall@25 and Recall@100 with a paired-bootstrap 95% interval (:mod:`helpers.eval.paired`),
overall and on the seen / unseen subsets.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Optional, Sequence

from helpers.common.cli import canonical_flags
from helpers.common.memory import free_memory
from helpers.common.io_utils import atomic_path, read_jsonl, write_json, write_jsonl
from helpers.common.models import folder_files, resolve_model
from helpers.eval.cascade import SWEEP_TOP_K
from helpers.eval.evaluate import PAIRED_KS, EvalArgs, default_label, per_query_rows, run_evaluation
from helpers.eval.metrics import per_query
from helpers.eval.paired import MIN_QUERIES, align, bootstrap_mean, paired_bootstrap
from helpers.eval.retrieval import SUBSETS, metrics_csv, metrics_rows

log = logging.getLogger(__name__)

TABLE_KS = (25, 50, 75, 100)


# ----------------------------------------------------------------------------- several models
_EPOCH = re.compile(r"epoch_(\d+)$")


def model_specs(models: Sequence, epoch_glob: Optional[str] = None,
                default_class: str = "decoder-only-icl") -> list[dict]:
    """Normalise the models to compare: ``{"label", "path", "class", "epoch"}`` dicts.

    ``models``: dicts (``path`` required; ``label``, ``class``, ``epoch`` and any
    :class:`EvalArgs` field optional; ``optional: true``: left out, with a warning, when ``path``
    does not exist) or plain paths. ``epoch_glob`` (e.g.
    ``model_output/demo/kd/merged_model_lora_epoch_*``) adds every folder it matches, in epoch
    order, labelled ``epoch {n}``. Labels must be unique.
    """
    import glob
    out = []
    for m in models or []:
        m = {"path": m} if isinstance(m, str) else dict(m)
        if not m.get("path"):
            raise ValueError(f"model spec {m!r}: 'path' is required")
        if m.pop("optional", False) and not str(m["path"]).startswith("demo:") and not Path(m["path"]).exists():
            log.warning("model %r skipped: %s does not exist (optional: e.g. a sentence-transformers baseline "
                        "whose step was skipped without sentence-transformers)", m.get("label", m["path"]), m["path"])
            continue
        m.setdefault("class", default_class)
        m.setdefault("label", default_label(m["path"]))
        if m.get("epoch") is None:
            hit = _EPOCH.search(str(m["path"]).rstrip("/"))
            m["epoch"] = int(hit.group(1)) if hit else None
        out.append(m)
    if epoch_glob:
        found = [p for p in glob.glob(epoch_glob) if Path(p).is_dir() and _EPOCH.search(p.rstrip("/"))]
        for p in sorted(found, key=lambda p: int(_EPOCH.search(p.rstrip("/")).group(1))):
            if any(Path(p).resolve() == Path(m["path"]).resolve() for m in out if not m["path"].startswith("demo:")):
                continue
            n = int(_EPOCH.search(p.rstrip("/")).group(1))
            out.append({"path": p, "class": default_class, "label": f"epoch {n}", "epoch": n})
    labels = [m["label"] for m in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"model labels must be unique, repeated: {', '.join(dup)}")
    if not out:
        raise ValueError("no model to evaluate (empty list and no epoch folder found)")
    return out


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("_") or "model"


def reuse_key(args: EvalArgs) -> dict:
    """What must not change for a model's saved metrics to stand: the settings, the model's files
    (name, size, mtime) and the content of the data files."""
    import hashlib
    files = folder_files(resolve_model(args.model_name_or_path))
    data = {k: hashlib.sha256(Path(v).read_bytes()).hexdigest() for k, v in
            (("queries", args.queries_file), ("corpus", args.corpus_file), ("train", args.train_queries_file)) if v}
    return json.loads(json.dumps({"args": asdict(args), "model_files": files, "data": data}))


def evaluate_models(specs: Sequence[dict], queries_file: str, corpus_file: str, output_dir: str,
                    train_queries_file: Optional[str] = None, reuse_existing: bool = False,
                    reference_model: Optional[str] = None, n_resamples: int = 1000, bootstrap_seed: int = 0,
                    min_queries: int = MIN_QUERIES, reranker: Optional[dict] = None,
                    rerank_models: Optional[Sequence[str]] = None, rerank_sweep_top_k: Sequence[int] = SWEEP_TOP_K,
                    rerank_sweep_alpha: Sequence[float] = (), **common) -> dict:
    """Run :func:`run_evaluation` for each spec (its own folder ``output_dir/<label>``); write
    ``comparison.csv`` and ``comparison.json``; returns ``{label: metrics}`` (with ``epoch``).

    ``common``: :class:`EvalArgs` fields for every model; a spec's own keys win.
    ``reuse_existing``: a model whose folder already holds metrics for the same settings, model
    files and data (``reuse_key.json``, see :func:`reuse_key`) is not evaluated again.
    Every model's metrics get ``"intervals"``: its own bootstrap 95% interval of MAP@25,
    Recall@25, Recall@100 per subset (``n_resamples`` resamples of the queries, seeded by
    ``bootstrap_seed``). ``reference_model`` (a label): every model also gets ``"paired"``, the
    paired-bootstrap difference against that model per subset (see :func:`paired_comparisons`);
    ``comparison.csv`` gains the columns of :func:`comparison_columns`. A subset with fewer than
    ``min_queries`` queries gets the verdict "too few queries" (no better / worse).

    ``reranker`` (a block of :class:`helpers.eval.cascade.RerankStage` settings; None or no
    ``reranker_name_or_path``: none): each model of ``rerank_models`` (labels; None: every model)
    also gets a cascade row, ``"<label> + reranker top k"`` (:func:`helpers.eval.cascade.run_cascade`
    on its rankings, one reranker loaded for all, a sweep over ``rerank_sweep_top_k`` and
    ``rerank_sweep_alpha``), compared like any model and, in its ``"cascade"`` entry, with its
    embedder alone. The reference may be a cascade label.
    """
    from helpers.eval.cascade import cascade_label, stage_from
    stage = stage_from(reranker, devices=common.get("devices"), use_fp16=common.get("use_fp16"),
                       trust_remote_code=common.get("trust_remote_code"))
    if stage is not None:
        from helpers.rerank.args import check_model_args
        check_model_args(stage)         # a missing reranker fails before the first (slow) model runs
    names = {f.name for f in fields(EvalArgs)}
    common = canonical_flags(common)
    specs = [canonical_flags(s) for s in specs]
    for s in specs:      # check every spec before the first (slow) model runs
        unknown = set(s) - names - {"path", "class", "label", "epoch"}
        if unknown:
            raise ValueError(f"model spec {s.get('label')!r}: unknown keys {sorted(unknown)}")
    labels = [s["label"] for s in specs]
    reranked = [] if stage is None else list(labels if rerank_models is None else rerank_models)
    unknown = [x for x in reranked if x not in labels]
    if unknown:
        raise ValueError(f"rerank_models {unknown} are not among the models: {', '.join(map(repr, labels))}")
    cascades = {x: cascade_label(x, stage) for x in reranked}
    labels_all = labels + list(cascades.values())
    if reference_model is not None and reference_model not in labels_all:
        raise ValueError(f"reference_model {reference_model!r} is not one of the models: "
                         f"{', '.join(map(repr, labels_all))}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    folders = {label: Path(output_dir) / slug(label) for label in labels_all}
    clash = sorted({str(f) for f in folders.values() if list(folders.values()).count(f) > 1})
    if clash:
        raise ValueError(f"model labels share an output folder ({', '.join(clash)}): rename one")
    results = {}
    for s in specs:
        kw = {**common, **{k: v for k, v in s.items() if k in names}}
        args = EvalArgs(**{**kw, "model_name_or_path": s["path"], "embedder_model_class": s["class"],
                           "label": s["label"], "queries_file": queries_file, "corpus_file": corpus_file,
                           "train_queries_file": train_queries_file,
                           "output_dir": str(folders[s["label"]])})
        key_path = Path(args.output_dir) / "reuse_key.json"
        key = reuse_key(args) if reuse_existing else None
        if key is not None and key_path.exists() and (Path(args.output_dir) / "metrics.json").exists() \
                and (Path(args.output_dir) / "rankings.jsonl").exists() \
                and json.loads(key_path.read_text(encoding="utf-8")) == key:
            m = json.loads((Path(args.output_dir) / "metrics.json").read_text(encoding="utf-8"))
            m.pop("args", None)
            log.info("%s: reusing the metrics in %s (same settings, model files and data)", s["label"], args.output_dir)
            results[s["label"]] = {**m, "epoch": s.get("epoch")}
            continue
        results[s["label"]] = {**run_evaluation(args), "epoch": s.get("epoch")}
        if key is not None:
            write_json(key_path, key)
        free_memory()      # one model at a time: release the last one before loading the next
    if cascades:
        results.update(_cascades(stage, cascades, folders, queries_file, corpus_file, train_queries_file,
                                 reuse_existing, rerank_sweep_top_k, rerank_sweep_alpha, n_resamples, bootstrap_seed))
    tables = {label: per_query_table(folders[label]) for label in results}
    for label, extra in paired_comparisons(tables, reference_model, n_resamples, bootstrap_seed,
                                            min_queries).items():
        results[label].update(extra)
    rows = [{"epoch": m["epoch"], **r, **comparison_columns(m, r["subset"])}
            for label, m in results.items() for r in metrics_rows(m, label)]
    with atomic_path(Path(output_dir) / "comparison.csv") as tmp:
        tmp.write_text(metrics_csv(rows), encoding="utf-8")
    write_json(Path(output_dir) / "comparison.json", results)
    if reference_model is not None:
        for label, m in results.items():
            st = m["paired"].get("all", {}).get(next(k for k in m["paired"]["metrics"] if k.startswith("MAP@")))
            if st:
                log.info("%s vs %s: dMAP %+.4f [%+.4f, %+.4f] (%s; better %.0f%%, worse %.0f%% of queries)", label,
                         reference_model, st["mean_diff"], st["lo"], st["hi"], st["verdict"], 100 * st["better"],
                         100 * st["worse"])
    return results


def _cascades(stage, cascades: dict, folders: dict, queries_file, corpus_file, train_queries_file, reuse_existing,
              sweep_top_k, sweep_alpha, n_resamples, seed) -> dict:
    """The cascade rows of :func:`evaluate_models`: one reranker, loaded once when something is to
    be scored, re-orders each embedder's rankings."""
    from helpers.eval.cascade import run_cascade
    from helpers.rerank.args import build_reranker
    loaded = {}

    class Lazy:                      # loads the reranker on the first score_groups call only
        def score_groups(self, queries, passages):
            if "r" not in loaded:
                loaded["r"] = build_reranker(stage)
            return loaded["r"].score_groups(queries, passages)

    out = {}
    for emb, label in cascades.items():
        m = run_cascade(stage, folders[emb], queries_file, corpus_file, folders[label], train_queries_file,
                        sweep_top_k, sweep_alpha, label=label, reranker=Lazy(), reuse_existing=reuse_existing,
                        n_resamples=n_resamples, bootstrap_seed=seed)
        out[label] = {**{k: v for k, v in m.items() if k != "sweep"}, "epoch": None}
    loaded.clear()
    free_memory()
    return out


# ----------------------------------------------------------------------------- per-query values, paired comparisons
def _metric_names(table: dict) -> list[str]:
    keys = [k for k in table if k != "seen"]
    return sorted(keys, key=lambda k: (not k.startswith("MAP@"), int(k.split("@")[1])))


def per_query_table(model_dir) -> dict:
    """A model folder's per-query values: ``{"seen": {qid: bool|None}, "MAP@25": {qid: AP@25},
    "Recall@25": {qid: ...}, ...}`` from its ``per_query.jsonl``. A folder written before that
    file existed gets it now, computed from its ``rankings.jsonl`` (and ``metrics.json`` args)."""
    d = Path(model_dir)
    f = d / "per_query.jsonl"
    if not f.exists():
        if not (d / "rankings.jsonl").exists():
            raise FileNotFoundError(f"{d}: no per_query.jsonl or rankings.jsonl: evaluate this model again")
        args = json.loads((d / "metrics.json").read_text(encoding="utf-8")).get("args", {}) \
            if (d / "metrics.json").exists() else {}
        ranks = read_jsonl(d / "rankings.jsonl")
        topk = args.get("topk", min(len(r["ranked_ids"]) for r in ranks))
        pq = per_query([r["ranked_ids"] for r in ranks], [r["pos_ids"] for r in ranks],
                       ks=[k for k in PAIRED_KS if k <= topk], map_k=args.get("map_k", 25))
        write_jsonl(f, per_query_rows(ranks, pq, [r.get("seen") for r in ranks]))
    table = {"seen": {}}
    for r in read_jsonl(f):
        q = r["query_id"]
        table["seen"][q] = r.get("seen")
        for k, v in r.items():
            if k.startswith("AP@"):
                table.setdefault("MAP@" + k[3:], {})[q] = float(v)
            elif k.startswith("Recall@"):
                table.setdefault(k, {})[q] = float(v)
    return table


def _subset_ids(table: dict, subset: str) -> Optional[list]:
    ids = sorted(table["seen"])
    if subset == "all":
        return ids
    if any(table["seen"][q] is None for q in ids):
        return None                    # no train file: no split
    return [q for q in ids if table["seen"][q] is (subset == "seen")]


def paired_comparisons(tables: dict, reference: Optional[str] = None, n_resamples: int = 1000,
                       seed: int = 0, min_queries: int = MIN_QUERIES) -> dict:
    """``{label: {"intervals": ..., "paired": ...}}`` from :func:`per_query_table` tables.

    ``intervals[subset][metric]``: the model's own :func:`helpers.eval.paired.bootstrap_mean`.
    With a ``reference`` label, ``paired = {"reference": label (None for the reference itself),
    "metrics": [compared metrics], subset: {metric: helpers.eval.paired.paired_bootstrap(reference,
    model)}}``, subsets all / seen / unseen (seen by the reference's flags; a subset without
    queries is left out). Pairing is by query id over sorted ids; different query sets are an error.
    """
    if reference is not None and reference not in tables:
        raise ValueError(f"reference {reference!r} is not one of the models: {', '.join(map(repr, tables))}")
    out = {}
    for label, t in tables.items():
        iv = {}
        for sub in SUBSETS:
            ids = _subset_ids(t, sub)
            if ids:
                iv[sub] = {k: bootstrap_mean([t[k][q] for q in ids], n_resamples, seed) for k in _metric_names(t)}
        out[label] = {"intervals": iv}
    if reference is None:
        return out
    ref = tables[reference]
    metrics = [k for k in _metric_names(ref) if all(k in t for t in tables.values())]
    if not any(k.startswith("MAP@") for k in metrics):
        raise ValueError("paired comparison: the models do not share a MAP@k (different map_k?)")
    for label, t in tables.items():
        p = {"reference": None if label == reference else reference, "metrics": metrics}
        if label != reference:
            align(ref[metrics[0]], t[metrics[0]], reference, label)     # same query set, else an error naming both
            for sub in SUBSETS:
                ids = _subset_ids(ref, sub)
                if ids:
                    p[sub] = {k: paired_bootstrap([ref[k][q] for q in ids], [t[k][q] for q in ids], n_resamples,
                                                  seed, label_a=reference, label_b=label,
                                                  min_queries=min_queries) for k in metrics}
        out[label]["paired"] = p
    return out


def comparison_columns(m: dict, subset: str = "all") -> dict:
    """Extra ``comparison.csv`` columns of one model and subset: ``MAP@25_lo``, ``MAP@25_hi``
    (own interval), and with a reference ``reference`` (empty on the reference's row), per
    compared metric ``dMAP@25``, ``dMAP@25_lo``, ``dMAP@25_hi`` (then ``dRecall@25...``,
    ``dRecall@100...``), ``better``, ``worse``, ``same`` (shares of queries by AP@25),
    ``significant`` (False when the dMAP interval contains 0) and ``verdict``."""
    cols = {}
    key = next((k for k in m if str(k).startswith("MAP@")), "MAP@25")
    if "intervals" in m:
        iv = m["intervals"].get(subset, {}).get(key, {})
        cols[f"{key}_lo"], cols[f"{key}_hi"] = iv.get("lo"), iv.get("hi")
    p = m.get("paired")
    if p is not None:
        cols["reference"] = p["reference"]
        st = p.get(subset, {})
        for k in p["metrics"]:
            s = st.get(k, {})
            cols.update({f"d{k}": s.get("mean_diff"), f"d{k}_lo": s.get("lo"), f"d{k}_hi": s.get("hi")})
        s = st.get(key, {})
        cols.update({c: s.get(c) for c in ("better", "worse", "same", "significant", "verdict")})
    return cols


# ----------------------------------------------------------------------------- tables
def _ci(iv, digits: int, signed: bool = False):
    if not iv or iv.get("lo") is None:
        return None
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"[{f.format(iv['lo'])}, {f.format(iv['hi'])}]"


def comparison_table(results: dict, ks: Sequence[int] = TABLE_KS, map_k: int = 25, digits: int = 4,
                     subset: str = "all") -> list[dict]:
    """The seed's table: one row per model/epoch: ``Model/Epoch | MAP@25 | Recall@25 | ...``.

    With the bootstrap results of :func:`evaluate_models` it adds ``MAP@25 95% CI`` (the model's
    own interval) and, when a reference model was given, per compared metric ``dMAP@25`` and
    ``dMAP@25 95% CI`` (paired difference against the reference and its interval; likewise
    ``dRecall@25``, ``dRecall@100``), ``better`` / ``worse`` / ``same`` (shares of queries whose
    AP@25 went up / down / stayed) and ``verdict`` ("better", "worse", "no difference" when the
    interval contains 0, "too few queries" below the minimum; "reference" on the reference's own row). ``subset``: all, seen or unseen.
    """
    if subset not in SUBSETS:
        raise ValueError(f"comparison_table: subset must be one of {SUBSETS}, got {subset!r}")
    key = f"MAP@{map_k}"
    out = []
    for label, m in results.items():
        sm = m if subset == "all" else (m.get(subset) or {})
        row = {"Model/Epoch": label, key: sm.get(key)}
        if "intervals" in m:
            row[f"{key} 95% CI"] = _ci(m["intervals"].get(subset, {}).get(key), digits)
        row.update({f"Recall@{k}": sm.get(f"Recall@{k}") for k in ks})
        p = m.get("paired")
        if p is not None:
            st = p.get(subset, {})
            for k in p["metrics"]:
                row[f"d{k}"] = st.get(k, {}).get("mean_diff")
                row[f"d{k} 95% CI"] = _ci(st.get(k), digits, signed=True)
            s = st.get(key, {})
            row.update({c: s.get(c) for c in ("better", "worse", "same")})
            row["verdict"] = "reference" if p["reference"] is None else s.get("verdict")
        out.append({k: (round(v, digits) if isinstance(v, float) else v) for k, v in row.items()})
    return out
