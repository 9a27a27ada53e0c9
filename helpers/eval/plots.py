"""Evaluation plots (matplotlib, safe without a display): Recall@k curves, a metric by epoch,
MAP@25 bars with bootstrap intervals against a reference,
seen vs unseen bars. Each function returns the figure and, given ``path``, saves a PNG atomically.
No pyplot: figures are plain ``Figure`` objects, so nothing depends on a display backend (a
notebook shows the saved PNG, or the figure itself).

Inputs are the metric dicts of :mod:`helpers.eval.evaluate` (keys ``"MAP@25"``, ``"Recall@1"`` ..
``"Recall@100"``, ``"MRR"``, and ``"seen"`` / ``"unseen"`` sub-dicts).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from helpers.common.io_utils import atomic_path

_RECALL = re.compile(r"^Recall@(\d+)$")


def recall_curve(metrics: Mapping) -> tuple[list[int], list[float]]:
    """``{"Recall@k": v, ...}`` -> (sorted ks, values). A plain list means k = 1..len."""
    if isinstance(metrics, Mapping):
        pts = sorted((int(m.group(1)), float(v)) for key, v in metrics.items()
                     if (m := _RECALL.match(str(key))))
    else:
        pts = [(i + 1, float(v)) for i, v in enumerate(metrics)]
    if not pts:
        raise ValueError("recall_curve: no Recall@k values in the metrics "
                         f"(keys: {', '.join(map(str, list(metrics)[:8]))})")
    ks, vals = zip(*pts)
    return list(ks), list(vals)


def save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _figure(w, h):
    # A bare Figure (no pyplot): no global state, no display needed, nothing left open.
    fig = Figure(figsize=(w, h))
    return fig, fig.subplots()


def plot_recall_curves(curves: Mapping[str, Mapping | Sequence[float]], path=None,
                       title: str = "Recall@k", marks: Sequence[int] = (25, 50, 75, 100)):
    """One line per model/epoch: ``{label: metrics dict (or list of Recall@1..n)}``."""
    if not curves:
        raise ValueError("plot_recall_curves: nothing to plot")
    fig, ax = _figure(7, 4.5)
    for label, m in curves.items():
        ks, vals = recall_curve(m)
        ax.plot(ks, vals, label=str(label), lw=1.6)
    for k in marks:
        ax.axvline(k, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)


def plot_metric_by_epoch(history: Sequence[Mapping], metrics: Sequence[str] = ("MAP@25",), path=None,
                         x: str = "epoch", title: str | None = None, baselines: Mapping[str, Mapping] | None = None):
    """``history``: rows like ``{"epoch": 1, "MAP@25": 0.3, ...}``; one line per metric.
    ``baselines``: ``{label: metrics}`` drawn as dashed horizontal lines (e.g. the zero-shot base)."""
    if not history:
        raise ValueError("plot_metric_by_epoch: empty history")
    fig, ax = _figure(6, 4)
    for name in metrics:
        rows = [r for r in history if r.get(name) is not None]
        if not rows:
            raise ValueError(f"plot_metric_by_epoch: no row has {name!r} "
                             f"(keys: {', '.join(map(str, history[0]))})")
        rows = sorted(rows, key=lambda r: r[x])
        line, = ax.plot([r[x] for r in rows], [float(r[name]) for r in rows], marker="o", label=name)
        for label, m in (baselines or {}).items():
            if m.get(name) is not None:
                ax.axhline(float(m[name]), ls="--", lw=1, color=line.get_color(), label=f"{name} {label}")
    xs = sorted({r[x] for r in history if r.get(x) is not None})
    if len(xs) <= 20:
        ax.set_xticks(xs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(x)
    ax.set_ylabel(", ".join(metrics))
    ax.set_title(title or f"{', '.join(metrics)} by {x}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_seen_unseen(results: Mapping[str, Mapping], metric: str = "MAP@25", path=None, title: str | None = None):
    """Grouped bars: for each model/epoch label, ``metric`` on all, seen and unseen queries.

    A group missing from a result (no train file, or no unseen query) is drawn as no bar.
    """
    if not results:
        raise ValueError("plot_seen_unseen: nothing to plot")
    groups = ("all", "seen", "unseen")
    labels = list(results)
    fig, ax = _figure(max(5, 1.4 * len(labels) + 2), 4)
    width = 0.8 / len(groups)
    for gi, g in enumerate(groups):
        xs, ys, ns = [], [], []
        for li, label in enumerate(labels):
            m = results[label] if g == "all" else results[label].get(g)
            if m is None or m.get(metric) is None:
                continue
            xs.append(li + (gi - 1) * width)
            ys.append(float(m[metric]))
            ns.append(m.get("n_queries"))
        bars = ax.bar(xs, ys, width, label=g)
        for b, n in zip(bars, ns):
            if n is not None:
                ax.annotate(f"n={n}", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([str(s) for s in labels], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric}: seen vs unseen misconceptions")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def plot_map_with_intervals(results: Mapping[str, Mapping], reference: str | None = None, path=None,
                            metric: str = "MAP@25", subset: str = "all", title: str | None = None):
    """One bar per model/epoch: ``metric`` with its own bootstrap 95% interval as error bars.

    ``results``: :func:`helpers.eval.compare.evaluate_models`' output (``"intervals"`` per model; a
    model without one is drawn without error bar). ``reference``: the label drawn hatched, with
    a dashed line at its value (default: the reference of the paired comparison, if any); a model
    with a paired comparison is annotated with its difference and ``*`` when the interval of the
    difference excludes 0. ``subset``: all, seen or unseen.
    """
    if not results:
        raise ValueError("plot_map_with_intervals: nothing to plot")
    if reference is None:
        reference = next((m["paired"]["reference"] for m in results.values()
                          if (m.get("paired") or {}).get("reference")), None)
    if reference is not None and reference not in results:
        raise ValueError(f"plot_map_with_intervals: reference {reference!r} is not one of "
                         f"{', '.join(map(repr, results))}")
    labels, ys, errs = [], [], []
    for label, m in results.items():
        sm = m if subset == "all" else (m.get(subset) or {})
        if sm.get(metric) is None:
            continue
        y = float(sm[metric])
        iv = ((m.get("intervals") or {}).get(subset) or {}).get(metric)
        labels.append(label)
        ys.append(y)
        errs.append((y - iv["lo"], iv["hi"] - y) if iv else (0.0, 0.0))
    if not labels:
        raise ValueError(f"plot_map_with_intervals: no model has {metric!r} on subset {subset!r}")
    fig, ax = _figure(max(5, 1.1 * len(labels) + 2), 4)
    colors = ["tab:gray" if lab == reference else "tab:blue" for lab in labels]
    bars = ax.bar(range(len(labels)), ys, 0.6, color=colors, yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                  capsize=4, error_kw={"lw": 1.2})
    for b, lab in zip(bars, labels):
        if lab == reference:
            b.set_hatch("//")
            ax.axhline(b.get_height(), ls="--", lw=1, color="tab:gray", label=f"reference: {lab}")
        st = (((results[lab].get("paired") or {}).get(subset) or {}).get(metric))
        if st:
            ax.annotate(f"Δ{st['mean_diff']:+.3f}{'*' if st['significant'] else ''}",
                        (b.get_x() + b.get_width() / 2, 0), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, color="white" if b.get_height() > 0.05 else "black")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{s} (ref)" if s == reference else str(s) for s in labels], rotation=20, ha="right",
                       fontsize=8)
    if ax.texts:
        ax.set_xlabel("Δ: paired difference vs the reference (*: its 95% interval excludes 0)", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_ylim(bottom=0)
    ax.set_title(title or f"{metric} with bootstrap 95% intervals" + ("" if subset == "all" else f" ({subset})"))
    if reference is not None:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def plot_rerank_sweep(sweep: Sequence[Mapping], path=None, title: str = "rerank the embedder's top k"):
    """The cascade's sweep (rows of :func:`helpers.eval.cascade.run_cascade`): MAP@25 by k, one line
    per fusion weight (reranker alone: alpha None), the embedder alone dashed, its Recall@k (the
    ceiling) dotted on the right axis; the seconds the second stage took written at each k."""
    if not sweep:
        raise ValueError("plot_rerank_sweep: nothing to plot")
    key = next(k for k in sweep[0] if k.startswith("MAP@"))
    fig, ax = _figure(7, 4.5)
    ks = sorted({r["top_k"] for r in sweep})
    for a in sorted({r["alpha"] for r in sweep}, key=lambda a: -1 if a is None else a):
        rows = sorted((r for r in sweep if r["alpha"] == a), key=lambda r: r["top_k"])
        ax.plot([r["top_k"] for r in rows], [r[key] for r in rows], marker="o", lw=1.6,
                label="reranker score" if a is None else f"fusion alpha {a:g}")
    ax.axhline(sweep[0][f"embedder {key}"], color="0.3", ls="--", lw=1, label="embedder alone")
    first = {r["top_k"]: r for r in sweep if r["alpha"] is None}
    for k in ks:
        ax.annotate(f"{first[k]['seconds']:.0f}s", (k, first[k][key]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=7, color="0.35")
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("k (embedder candidates re-ordered)")
    ax.set_ylabel(key)
    ax2 = ax.twinx()
    ax2.plot(ks, [first[k]["embedder Recall@k"] for k in ks], color="0.6", ls=":", marker=".", label="embedder Recall@k")
    ax2.set_ylabel("embedder Recall@k (ceiling)", color="0.45")
    ax2.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, fontsize=8, loc="lower right")
    return _finish(fig, path)
