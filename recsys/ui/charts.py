"""The page's charts, drawn server-side with matplotlib and returned as inline SVG.

Each function takes the plain data :mod:`recsys.ui.page` gathered and returns
an ``<svg>`` element as text, or ``None`` when there is nothing to draw. Text
from the data (model names, run keys) is drawn as plain text: mathtext is off,
and matplotlib escapes it for XML. No chart puts figures of different scales
on one axis.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from recsys.ui.words import SLICE, metric_label

#: One colour per model type, the same in every chart (matplotlib's tab10).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
#: The champion's colour, whatever model type it is.
CHAMPION_COLOR = "#222222"
#: The panels of the metric-by-model chart, by metric stem, in reading order.
PANELS = ("ndcg", "precision", "recall", "map", "hit_rate", "coverage")
_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "recsys",
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per model name, stable for a given set of names."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def panel_metrics(columns: Sequence[str]) -> list[str]:
    """The metric each panel of :func:`metrics_chart` draws, from the table's columns.

    ``coverage`` falls back to ``catalogue_coverage`` (the served figures'
    name for the same thing).
    """
    chosen = []
    for stem in PANELS:
        if stem == "coverage":
            found = next((c for c in ("coverage", "catalogue_coverage") if c in columns), None)
        else:
            found = next((c for c in columns if c.startswith(f"{stem}@")), None)
        if found:
            chosen.append(found)
    return chosen


def metrics_chart(rows: Sequence[Mapping[str, Any]], colors: Mapping[str, str]) -> str | None:
    """Small multiples: one panel per ranking metric, one horizontal bar per model.

    Each panel has its own scale from zero, and every bar carries its value;
    the champion's bar is dark and hatched.
    """
    columns = sorted({c for row in rows for c in row["metrics"]})
    metrics = panel_metrics(columns)
    if not rows or not metrics:
        return None
    labels = [row["label"] for row in rows]
    ncols = 3 if len(metrics) > 3 else len(metrics)
    nrows = math.ceil(len(metrics) / ncols)
    height = 0.6 + nrows * (0.5 + 0.28 * len(rows))
    with _style():
        fig, axes = _figure(10.0, height, nrows, ncols, sharey=True)
        for ax, metric in zip(axes, metrics, strict=False):
            values = [row["metrics"].get(metric, math.nan) for row in rows]
            _bars(ax, labels, values, [_color(row, colors) for row in rows], rows)
            ax.set_title(metric_label(metric))
        for ax in axes[len(metrics) :]:
            ax.set_visible(False)
        fig.tight_layout(h_pad=1.2, w_pad=1.5)
        return _svg(fig)


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], rows: Any) -> None:
    positions = list(range(len(labels)))
    finite = [v for v in values if math.isfinite(v)]
    top = max(finite, default=1.0) or 1.0
    bars = ax.barh(positions, [v if math.isfinite(v) else 0 for v in values], color=colors)
    for bar, row in zip(bars, rows, strict=True):
        if row["role"] == "champion":
            bar.set_hatch("///")
            bar.set_edgecolor("#ffffff")
    for pos, value in zip(positions, values, strict=True):
        text = f"{value:.3f}" if math.isfinite(value) else "n/a"
        ax.text(value if math.isfinite(value) else 0, pos, f" {text}", va="center", fontsize=8)
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.3)
    if top <= 1:  # a share: no tick past 1
        ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= 1.0001])
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)


def slices_chart(rows: Sequence[Mapping[str, Any]], metric: str | None) -> str | None:
    """Heatmap of ``metric`` per user or item group (rows) and model (columns).

    Groups come from the ``slice.<grouping>.<group>.<metric>`` figures; each
    cell carries its value; a missing value is left blank.
    """
    groups = sorted(
        {
            name
            for row in rows
            for name in row["metrics"]
            if (m := SLICE.match(name)) and (metric is None or m["metric"] == metric)
        }
    )
    if not rows or not groups:
        return None
    values = [[row["metrics"].get(g, math.nan) for row in rows] for g in groups]
    finite = [v for line in values for v in line if math.isfinite(v)]
    low, high = min(finite, default=0.0), max(finite, default=1.0)
    with _style():
        width = min(10.0, 2.6 + 1.25 * len(rows))
        fig, (ax,) = _figure(width, 0.9 + 0.3 * len(groups))
        image = ax.imshow(
            values, cmap="Blues", vmin=low, vmax=high if high > low else low + 1e-9, aspect="auto"
        )
        for i, line in enumerate(values):
            for j, value in enumerate(line):
                if math.isfinite(value):
                    dark = (value - low) / ((high - low) or 1) > 0.6
                    ax.text(
                        j,
                        i,
                        f"{value:.3f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "#1d2733",
                    )
        for i in range(1, len(groups)):
            if SLICE.match(groups[i])["slicing"] != SLICE.match(groups[i - 1])["slicing"]:
                ax.axhline(i - 0.5, color="white", linewidth=3)
        ax.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=20, ha="right")
        ax.set_yticks(range(len(groups)), [metric_label(g) for g in groups])
        ax.tick_params(length=0)
        ax.spines[:].set_visible(False)
        colorbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
        colorbar.set_label(metric_label(metric) if metric else "score")
        colorbar.outline.set_visible(False)
        fig.tight_layout()
        return _svg(fig)


def history_chart(
    history: Sequence[Mapping[str, Any]], primary: str | None, colors: Mapping[str, str]
) -> str | None:
    """``primary`` of each model over pipeline runs (oldest left), and the champion of the day.

    Filled markers are figures on every test user as served; hollow markers
    (runs whose folder is gone) are the warm-user figures MLflow logged.
    """
    if not history or not primary:
        return None
    models = sorted({m for point in history for m in point["scores"]})
    x = list(range(len(history)))
    with _style():
        fig, (ax,) = _figure(10.0, 3.4)
        for model in models:
            ys = [p["scores"].get(model, math.nan) for p in history]
            ax.plot(x, ys, color=colors.get(model), label=model, linewidth=1.6)
            for xi, p in zip(x, history, strict=True):
                if model in p["scores"]:
                    warm = p["basis"].get(model) == "warm"
                    ax.plot(
                        xi,
                        p["scores"][model],
                        "o",
                        color=colors.get(model),
                        markerfacecolor="white" if warm else colors.get(model),
                    )
        champion = [p.get("champion", math.nan) for p in history]
        if any(v is not None and math.isfinite(v) for v in champion):
            ax.plot(
                x,
                [math.nan if v is None else v for v in champion],
                "s--",
                color=CHAMPION_COLOR,
                label="champion at the time",
                linewidth=1.2,
            )
        ax.set_xticks(
            x, [_short(p["run_key"]) for p in history], rotation=20, ha="right", fontsize=7
        )
        ax.set_ylabel(metric_label(primary))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()
        return _svg(fig)


def tradeoff_chart(rerank: Mapping[str, Any] | None, primary: str | None) -> str | None:
    """The re-ranking trade-off: ``primary`` against average popularity, one point per knob.

    ``rerank`` is the benchmark's ``rerank_tradeoff`` shape (``model``,
    ``method``, ``points: [{"lam", primary, "avg_popularity", ...}]``).
    """
    points = [p for p in (rerank or {}).get("points") or [] if isinstance(p, Mapping)]
    metric = primary if points and primary in points[0] else None
    metric = metric or next(
        (k for k in (points[0] if points else {}) if k.startswith("ndcg@")), None
    )
    if not points or not metric or "avg_popularity" not in points[0]:
        return None
    with _style():
        fig, (ax,) = _figure(6.5, 3.4)
        xs = [p["avg_popularity"] for p in points]
        ys = [p[metric] for p in points]
        ax.plot(xs, ys, "o-", color=PALETTE[0])
        for p in points:
            ax.annotate(
                f"λ={p.get('lam', 0):g}",
                (p["avg_popularity"], p[metric]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
        ax.set_xlabel("average popularity of a recommended item (lower = less popularity bias)")
        ax.set_ylabel(metric_label(metric))
        ax.set_title(f"re-ranking {rerank.get('model', '?')} ({rerank.get('method', '?')})")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _svg(fig)


#: Marker colours of the decision made on a batch.
ACTION_COLORS = {"retrain": "#d62728", "defer": "#ff7f0e", "hold": "#1f77b4", "skip": "#7f7f7f"}
THRESHOLD_COLOR = "#b3261e"


def drift_chart(
    points: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float],
    panels: Sequence[tuple[str, str, str]],
) -> str | None:
    """Small multiples: one panel per drift or decay figure over the measured batches.

    Each panel has its own scale, its threshold drawn as a dashed red line
    (labelled with its value), each batch a marker coloured by the decision
    made on it (retrain, defer, hold), ringed in red where this figure itself
    passed its threshold, and a dotted vertical line where the champion
    measured against changed.
    """
    drawn = [p for p in panels if any(_finite(pt["metrics"].get(p[0])) for pt in points)]
    if not points or not drawn:
        return None
    x = list(range(len(points)))
    ncols = 2
    nrows = math.ceil(len(drawn) / ncols)
    with _style():
        fig, axes = _figure(10.0, 0.7 + 2.0 * nrows, nrows, ncols, sharex=True)
        for ax, (key, title, kind) in zip(axes, drawn, strict=False):
            ys = [_value(pt["metrics"].get(key)) for pt in points]
            ax.plot(x, ys, color="#9aa5b1", linewidth=1.0, zorder=1)
            for action, color in ACTION_COLORS.items():
                xs = [xi for xi, pt in zip(x, points, strict=True) if pt.get("action") == action]
                if xs:
                    ax.scatter(xs, [ys[i] for i in xs], s=18, color=color, zorder=3, label=action)
            limit = thresholds.get(key)
            over = [i for i, v in enumerate(ys) if limit is not None and v > limit]
            if over:
                ax.scatter(
                    over,
                    [ys[i] for i in over],
                    s=70,
                    facecolors="none",
                    edgecolors=THRESHOLD_COLOR,
                    linewidths=1.2,
                    zorder=4,
                    label="past its threshold",
                )
            if limit is not None:
                ax.axhline(limit, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.2, zorder=2)
                ax.annotate(
                    f"threshold {limit:g}",
                    (0, limit),
                    xycoords=("axes fraction", "data"),
                    xytext=(2, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=THRESHOLD_COLOR,
                )
            _champion_changes(ax, points)
            finite = [v for v in ys if math.isfinite(v)] + ([limit] if limit is not None else [])
            low, high = min(finite + [0.0]), max(finite)
            ax.set_ylim(low - 0.05 * (high - low or 1), high + 0.15 * (high - low or 1))
            ax.set_title(f"{title} ({kind})", loc="left")
            ax.grid(axis="y", alpha=0.3)
        for ax in axes[len(drawn) :]:
            ax.set_visible(False)
        step = max(1, len(points) // 12)
        for ax in axes[max(0, len(drawn) - ncols) : len(drawn)]:
            ax.set_xticks(
                x[::step],
                [pt["label"] for pt in points][::step],
                rotation=30,
                ha="right",
                fontsize=7,
            )
            ax.tick_params(axis="x", labelbottom=True)
        found: dict[str, Any] = {}
        for ax in axes[: len(drawn)]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                words = label if label == "past its threshold" else f"decision: {label}"
                found.setdefault(words, handle)
        shown = sorted(found.items(), key=lambda item: item[0] == "past its threshold")
        fig.legend(
            [h for _, h in shown],
            [lab for lab, _ in shown],
            loc="upper center",
            ncols=len(shown),
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(0.5, 1.0),
        )
        fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=1.0, w_pad=2.0)
        return _svg(fig)


def _champion_changes(ax: Any, points: Sequence[Mapping[str, Any]]) -> None:
    for i in range(1, len(points)):
        if points[i]["champion_version"] != points[i - 1]["champion_version"]:
            ax.axvline(i - 0.5, color=CHAMPION_COLOR, linestyle=":", linewidth=1.0)
            ax.annotate(
                f"champion v{points[i]['champion_version']}",
                (i - 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -9),
                textcoords="offset points",
                fontsize=7,
            )


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _value(value: object) -> float:
    return float(value) if _finite(value) else math.nan


def _short(run_key: str) -> str:
    return run_key if len(run_key) <= 26 else "…" + run_key[-25:]


def _color(row: Mapping[str, Any], colors: Mapping[str, str]) -> str:
    if row["role"] == "champion":
        return CHAMPION_COLOR
    return colors.get(row["model_type"], PALETTE[-3])


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        yield


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw: Any) -> Any:
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, list(axes.ravel())


def _svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element (text kept as text, no XML prologue)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
