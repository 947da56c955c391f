"""The page's HTML: Jinja2 templates in ``recsys/ui/templates/`` and the charts as inline SVG.

Autoescaping is on for every template; the only markup inserted unescaped is
the charts' SVG, which matplotlib writes with every text escaped for XML.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from recsys.ui import charts
from recsys.ui.monitoring import PANELS
from recsys.ui.words import format_number, metric_label


def render_page(page: Mapping[str, Any]) -> str:
    """The Recommender page for one registered model."""
    return _templates().get_template("recommender.html").render(page=page, charts=page_charts(page))


def page_charts(page: Mapping[str, Any]) -> dict[str, str | None]:
    """Every chart of the page as SVG text (``None`` where there is nothing to draw)."""
    latest = page.get("latest") or {}
    rows = latest.get("rows") or []
    names = [r["model_type"] for r in rows if r["role"] == "candidate"]
    names += [m for point in page.get("history") or [] for m in point["scores"]]
    colors = charts.model_colors(names)
    primary = page.get("primary")
    monitoring = page.get("monitoring") or {}
    return {
        "drift": charts.drift_chart(
            monitoring.get("points") or [], monitoring.get("thresholds") or {}, PANELS
        ),
        "metrics": charts.metrics_chart(rows, colors) if rows else None,
        "slices": charts.slices_chart(rows, primary) if rows else None,
        "history": charts.history_chart(page.get("history") or [], primary, colors),
        "tradeoff": charts.tradeoff_chart(latest.get("rerank"), primary),
    }


def render_report(report: Mapping[str, Any]) -> str:
    """The page's own Data Docs of one run's validation."""
    return _templates().get_template("validation.html").render(report=report)


def render_error(status: int, message: str, home: str = "") -> str:
    """A small HTML page for a refused request (404, 400...); ``home`` is the page's root path."""
    return _templates().get_template("error.html").render(status=status, message=message, home=home)


@functools.cache
def gx_stylesheet() -> str:
    """The ``<style>`` element inlined into Great Expectations' pages."""
    return _templates().get_template("_gx_style.html").render()


@functools.cache
def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    )
    env.filters["num"] = format_number
    env.filters["label"] = metric_label
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env
