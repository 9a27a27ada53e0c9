import pytest

from helpers.eval.plots import (plot_map_with_intervals, plot_metric_by_epoch, plot_recall_curves, plot_seen_unseen,
                           recall_curve)

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(scale):
    m = {f"Recall@{k}": min(1.0, scale * k / 100) for k in range(1, 101)}
    m.update({"MAP@25": scale / 3, "MRR": scale / 2, "n_queries": 10})
    return m


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 2000 and data.startswith(PNG)


def test_recall_curve_extracts_sorted_ks():
    ks, vals = recall_curve({"Recall@10": 0.5, "MAP@25": 0.1, "Recall@2": 0.2, "Recall@100": 0.9})
    assert ks == [2, 10, 100] and vals == [0.2, 0.5, 0.9]
    assert recall_curve([0.1, 0.2]) == ([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="no Recall@k"):
        recall_curve({"MAP@25": 0.1})


def test_recall_curves_png(tmp_path):
    out = tmp_path / "plots" / "recall.png"
    fig = plot_recall_curves({"base": _metrics(0.5), "epoch 1": _metrics(0.8)}, path=out)
    assert _is_png(out)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["base", "epoch 1"]
    assert len(ax.get_lines()[0].get_xdata()) == 100


def test_metric_by_epoch_png(tmp_path):
    hist = [{"epoch": 2, "MAP@25": 0.3, "Recall@25": 0.6}, {"epoch": 1, "MAP@25": 0.2, "Recall@25": 0.5}]
    out = tmp_path / "map.png"
    fig = plot_metric_by_epoch(hist, metrics=("MAP@25", "Recall@25"), path=out)
    assert _is_png(out)
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == [1, 2]   # sorted by epoch
    with pytest.raises(ValueError, match="no row has"):
        plot_metric_by_epoch(hist, metrics=("MAP@5",))


def test_seen_unseen_png(tmp_path):
    a = _metrics(0.5)
    a["seen"], a["unseen"] = _metrics(0.7), _metrics(0.1)
    b = _metrics(0.6)                      # no split: only the "all" bar
    out = tmp_path / "seen.png"
    fig = plot_seen_unseen({"base": a, "epoch 1": b}, path=out)
    assert _is_png(out)
    assert len(fig.axes[0].patches) == 4   # all x2, seen x1, unseen x1


def test_no_path_writes_nothing(tmp_path):
    plot_recall_curves({"x": _metrics(0.5)})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_recall_curves({})


def test_metric_by_epoch_baselines(tmp_path):
    hist = [{"epoch": 1, "MAP@25": 0.2}, {"epoch": 2, "MAP@25": 0.3}]
    fig = plot_metric_by_epoch(hist, baselines={"base": {"MAP@25": 0.05}, "other": {}}, path=tmp_path / "m.png")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["MAP@25", "MAP@25 base"]
    assert _is_png(tmp_path / "m.png")


def _with_interval(scale, lo, hi, paired=None):
    m = _metrics(scale)
    m["intervals"] = {"all": {"MAP@25": {"mean": m["MAP@25"], "lo": lo, "hi": hi, "n": 10}}}
    if paired is not None:
        m["paired"] = paired
    return m


def test_map_with_intervals_png(tmp_path):
    ref = {"reference": None, "metrics": ["MAP@25"]}
    st = {"mean_diff": 0.1, "lo": 0.02, "hi": 0.18, "significant": True}
    res = {"base": _with_interval(0.3, 0.05, 0.15, ref),
           "epoch 1": _with_interval(0.6, 0.15, 0.25, {"reference": "base", "metrics": ["MAP@25"],
                                                       "all": {"MAP@25": st}}),
           "no interval": _metrics(0.45)}
    out = tmp_path / "map_ci.png"
    fig = plot_map_with_intervals(res, path=out)                       # reference found in the paired info
    assert _is_png(out)
    ax = fig.axes[0]
    bars = ax.patches
    assert [round(b.get_height(), 4) for b in bars] == [0.1, 0.2, 0.15]
    assert bars[0].get_hatch() == "//" and not bars[1].get_hatch()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base (ref)", "epoch 1", "no interval"]
    segs = [c for c in ax.collections if len(c.get_segments()) == 3][0].get_segments()   # the error bars
    assert [(round(s[0][1], 4), round(s[1][1], 4)) for s in segs] == [(0.05, 0.15), (0.15, 0.25), (0.15, 0.15)]
    assert any(t.get_text() == "Δ+0.100*" for t in ax.texts)
    assert [line.get_label() for line in ax.get_lines() if line.get_label().startswith("reference")] == ["reference: base"]
    plot_map_with_intervals(res, reference=None, path=None)
    with pytest.raises(ValueError, match="'nope' is not one of"):
        plot_map_with_intervals(res, reference="nope")
    with pytest.raises(ValueError, match="no model has"):
        plot_map_with_intervals(res, subset="seen")
