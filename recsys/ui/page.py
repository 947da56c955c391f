"""The operator's page: which model serves, what the last runs did, whether the data held.

Everything the Airflow plugin shows is built here, from two sources and
nothing else (the page keeps no state of its own):

- MLflow, through :mod:`recsys.registry`: the registered model behind the
  ``champion`` alias with its ``recsys.decision.*`` tags, and the training
  runs (grouped by their ``recsys.run_key`` tag) for the metric history;
- the run folders ``<RECSYS_HOME>/runs/<run_key>/`` written by the pipeline
  (:class:`recsys.pipeline.runfolder.RunFolder`): ``evaluation.json``
  (leaderboard), ``decision.json``, ``validation.json`` and the Great
  Expectations Data Docs.

:func:`build_page` gathers the data as plain dicts, :func:`render_page` turns
them into one HTML page (Jinja2 templates in ``recsys/ui/templates/``, charts
drawn server-side with matplotlib as inline SVG), and :func:`create_app`
serves it as a FastAPI app. The app never authenticates by itself: the caller
passes ``authorize`` (the Airflow plugin passes Airflow's own login check), so
this module does not import Airflow.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from recsys import config, registry
from recsys.errors import InputError
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.promotion.decision import TAG_PREFIX

log = logging.getLogger(__name__)

#: Where the MLflow UI is reached from the operator's browser.
DEFAULT_MLFLOW_UI_URL = "http://localhost:5000"
#: How many pipeline runs the validation table lists.
VALIDATION_RUNS = 10
#: How many MLflow runs the metric history reads at most.
HISTORY_MLFLOW_RUNS = 500
#: Metrics that are counts or timings, not ranking quality: kept out of the bar chart.
_NOT_QUALITY = re.compile(r"^(n_|train_seconds)")
#: A plain ranking metric at a cut-off, e.g. ``ndcg@10`` (not ``gap.age_band.ndcg@10``).
_AT_K = re.compile(r"^[a-z_]+@\d+$")
#: Leaderboard entries that are identifiers, not metrics.
_ROW_KEYS = frozenset({"model", "run_id", "model_uri", "role", "version", "model_type"})
#: A run folder name as :func:`recsys.config.safe_name` makes it.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Artifact folder of the plots a training run logs.
PLOTS_FOLDER = "plots"

Authorize = Callable[[Request], Awaitable[None]]


class PageError(InputError):
    """A request named a run, file or plot the page does not serve."""


# --------------------------------------------------------------- small helpers
def mlflow_ui_url() -> str:
    """Base address of the MLflow UI: ``MLFLOW_UI_URL`` or ``http://localhost:5000``."""
    return os.environ.get("MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL).rstrip("/")


def run_url(base: str, experiment_id: str | None, run_id: str) -> str:
    """Link to one run in the MLflow UI."""
    return f"{base}/#/experiments/{quote(str(experiment_id or '0'))}/runs/{quote(run_id)}"


def version_url(base: str, name: str, version: int | str) -> str:
    """Link to one registered model version in the MLflow UI."""
    return f"{base}/#/models/{quote(name)}/versions/{quote(str(version))}"


def format_time(epoch_ms: float | None) -> str | None:
    """``2026-11-27 22:31 UTC`` for an epoch in milliseconds; ``None`` stays ``None``."""
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decision_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The ``recsys.decision.*`` tags of a model version, prefix removed."""
    return {
        key[len(TAG_PREFIX) :]: value for key, value in tags.items() if key.startswith(TAG_PREFIX)
    }


# -------------------------------------------------------------------- champion
def build_champion(name: str, base_url: str) -> dict[str, Any] | None:
    """What the page says about the serving model, or ``None`` when none serves yet.

    Returns:
        ``version``, ``model_type``, ``run_id``, ``run_key``, ``metrics``
        (name → value, from its training run), ``decision`` (the decision
        record from its version tags: verdict, metric, scores, margin,
        reason...), ``registered_at``, ``run_url`` and ``version_url``.
    """
    champion = registry.get_champion(name)
    if champion is None:
        return None
    version = registry.get_version_summary(name, champion["version"]) or {}
    run = registry.get_run_summary(champion["run_id"]) if champion["run_id"] else None
    return {
        "version": champion["version"],
        "model_type": champion.get("model_type") or "unknown",
        "run_id": champion["run_id"],
        "run_key": champion["run_tags"].get("recsys.run_key"),
        "metrics": {
            m: champion["metrics"][m]
            for m in metric_columns([champion], decision_from_tags(champion["tags"]).get("metric"))
        },
        "decision": decision_from_tags(champion["tags"]),
        "registered_at": format_time(version.get("creation_timestamp")),
        "run_url": run_url(base_url, run and run["experiment_id"], champion["run_id"])
        if champion["run_id"]
        else None,
        "version_url": version_url(base_url, name, champion["version"]),
    }


# --------------------------------------------------------------- training runs
def group_runs(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """MLflow runs grouped by pipeline run (tag ``recsys.run_key``), newest first.

    Runs without the tag were not logged by the pipeline and are not listed.

    Returns:
        ``[{"run_key", "start_time" (earliest of the group, epoch ms), "runs"}]``.
    """
    groups: dict[str, dict[str, Any]] = {}
    for run in runs:
        key = run["tags"].get("recsys.run_key")
        if not key:
            log.debug("run %s has no recsys.run_key tag; not a pipeline run", run["run_id"])
            continue
        group = groups.setdefault(key, {"run_key": key, "start_time": None, "runs": []})
        group["runs"].append(run)
        start = run.get("start_time")
        if start is not None and (group["start_time"] is None or start < group["start_time"]):
            group["start_time"] = start
    return sorted(groups.values(), key=lambda g: g["start_time"] or 0, reverse=True)


def primary_metric(
    evaluation: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    runs: Iterable[Mapping[str, Any]] = (),
) -> str | None:
    """The metric promotion compares: from the evaluation, the champion's decision,
    else the first ``ndcg@K`` any run logged; ``None`` when nothing names one."""
    if evaluation and evaluation.get("primary"):
        return str(evaluation["primary"])
    if champion and champion.get("decision", {}).get("metric"):
        return champion["decision"]["metric"]
    names = sorted({m for run in runs for m in run.get("metrics", {}) if m.startswith("ndcg@")})
    return names[0] if names else None


def leaderboard_rows(
    evaluation: Mapping[str, Any] | None, group: Mapping[str, Any], base_url: str
) -> list[dict[str, Any]]:
    """Every candidate of one pipeline run, best first, then the champion it was scored against.

    The run folder's ``evaluation.json`` is used when present (it holds the
    champion's scores on the same holdout); otherwise the candidates' own
    MLflow metrics.

    Returns:
        ``[{"model", "role" ("candidate" or "champion"), "run_id", "run_url",
        "metrics"}]``.
    """
    experiments = {run["run_id"]: run["experiment_id"] for run in group["runs"]}
    if evaluation and evaluation.get("leaderboard"):
        rows = [_candidate_row(entry, experiments, base_url) for entry in evaluation["leaderboard"]]
        champion = evaluation.get("champion")
        if champion:
            rows.append(_champion_row(champion, base_url))
        return rows
    return [
        {
            "model": _model_of(run),
            "model_type": _model_of(run),
            "role": "candidate",
            "run_id": run["run_id"],
            "run_url": run_url(base_url, run["experiment_id"], run["run_id"]),
            "metrics": dict(sorted(run["metrics"].items())),
        }
        for run in group["runs"]
    ]


def _candidate_row(
    entry: Mapping[str, Any], experiments: Mapping[str, str], base_url: str
) -> dict[str, Any]:
    metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else entry
    run_id = entry.get("run_id")
    return {
        "model": str(entry.get("model", "?")),
        "model_type": str(entry.get("model", "?")),
        "role": "candidate",
        "run_id": run_id,
        "run_url": run_url(base_url, experiments.get(run_id), run_id) if run_id else None,
        "metrics": {
            k: v for k, v in sorted(metrics.items()) if k not in _ROW_KEYS and _is_number(v)
        },
    }


def _champion_row(champion: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    version = champion.get("version")
    name = f"champion v{version}" if version is not None else "champion"
    model_type = champion.get("model_type")
    run_id = champion.get("run_id")
    experiment = registry.get_run_summary(run_id) if run_id else None
    return {
        "model": f"{name} ({model_type})" if model_type else name,
        "model_type": model_type or name,
        "role": "champion",
        "run_id": run_id,
        "run_url": run_url(base_url, experiment and experiment["experiment_id"], run_id)
        if run_id
        else None,
        "metrics": {k: v for k, v in sorted(champion.get("metrics", {}).items()) if _is_number(v)},
    }


def build_latest(
    groups: list[dict[str, Any]], champion: Mapping[str, Any] | None, root: Path, base_url: str
) -> dict[str, Any] | None:
    """The newest pipeline run: its leaderboard, metric columns and promotion decision.

    Returns:
        ``None`` when no pipeline run was logged; else ``run_key``,
        ``started_at``, ``primary``, ``rows`` (see :func:`leaderboard_rows`),
        ``columns`` (metric names shown, primary first), ``decision`` (the
        run's ``decision.json`` or ``None``) and ``plots`` (``[{"model",
        "run_id", "path"}]``: images each candidate logged under ``plots/``).
    """
    if not groups:
        return None
    group = groups[0]
    folder = RunFolder(group["run_key"], root)
    evaluation = folder.read_json_or_none(rf.EVALUATION)
    rows = leaderboard_rows(evaluation, group, base_url)
    primary = primary_metric(evaluation, champion, group["runs"])
    return {
        "run_key": group["run_key"],
        "started_at": format_time(group["start_time"]),
        "primary": primary,
        "rows": rows,
        "columns": metric_columns(rows, primary),
        "decision": folder.read_json_or_none(rf.DECISION),
        "plots": list_plots(group["runs"]),
    }


def metric_columns(rows: Iterable[Mapping[str, Any]], primary: str | None) -> list[str]:
    """Metric names any row has: the primary first, quality metrics, then counts and timings."""
    names = {name for row in rows for name in row["metrics"]}
    rest = sorted(names - {primary}, key=lambda n: (bool(_NOT_QUALITY.match(n)), n))
    return ([primary] if primary in names else []) + rest


def list_plots(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The PNG plots each run logged under ``plots/``, sorted by model."""
    plots = []
    for run in runs:
        model = _model_of(run)
        for path in registry.list_run_artifacts(run["run_id"], PLOTS_FOLDER):
            if path.lower().endswith(".png"):
                plots.append({"model": model, "run_id": run["run_id"], "path": path})
    return sorted(plots, key=lambda p: (p["model"], p["path"]))


def _model_of(run: Mapping[str, Any]) -> str:
    return run["tags"].get(registry.TAG_MODEL_TYPE) or run["run_name"] or run["run_id"]


# --------------------------------------------------------------------- history
def metric_history(groups: Iterable[Mapping[str, Any]], primary: str | None) -> list[dict]:
    """The primary metric of every model in every pipeline run, oldest run first.

    Returns:
        ``[{"run_key", "started_at", "scores": {model: value}, "best_model",
        "best_score"}]``; runs that logged no ``primary`` are left out.
    """
    history = []
    for group in reversed(list(groups)):
        scores = {
            _model_of(run): run["metrics"][primary]
            for run in group["runs"]
            if primary in run["metrics"]
        }
        if not scores:
            continue
        best = max(scores, key=scores.__getitem__)
        history.append(
            {
                "run_key": group["run_key"],
                "started_at": format_time(group["start_time"]),
                "scores": scores,
                "best_model": best,
                "best_score": scores[best],
            }
        )
    return history


# ------------------------------------------------------------------ validation
def validation_runs(root: Path, limit: int = VALIDATION_RUNS) -> list[dict[str, Any]]:
    """Data validation of the newest pipeline runs (those with ``validation.json``).

    Runs are ordered by when their report was written, newest first; a run
    whose batch failed has no MLflow run, so the folders are the only record.

    Returns:
        ``[{"run_key", "checked_at", "success", "suites": [{"name",
        "success", "rows", "failures"}], "failures": [readable lines],
        "docs_url": str | None}]``; ``docs_url`` is relative to the page.
    """
    if not root.is_dir():
        return []
    reports = sorted(root.glob(f"*/{rf.VALIDATION}"), key=_mtime, reverse=True)[:limit]
    return [_validation_row(path) for path in reports]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _validation_row(path: Path) -> dict[str, Any]:
    report = RunFolder(path.parent.name, path.parent.parent).read_json_or_none(rf.VALIDATION)
    report = report if isinstance(report, dict) else {}
    suites = report.get("suites") if isinstance(report.get("suites"), Mapping) else {}
    docs = path.parent / rf.DATA_DOCS / "index.html"
    return {
        "run_key": path.parent.name,
        "checked_at": format_time(_mtime(path) * 1000),
        "success": report.get("success") is True,
        "suites": [
            {
                "name": name,
                "success": bool(s.get("success")),
                "rows": s.get("row_count"),
                "failures": len(s.get("failures") or []),
            }
            for name, s in sorted(suites.items())
            if isinstance(s, Mapping)
        ],
        "failures": [
            _failure_line(f) for f in report.get("failures") or [] if isinstance(f, Mapping)
        ],
        "docs_url": f"data-docs/{quote(path.parent.name)}/index.html" if docs.is_file() else None,
    }


def _failure_line(failure: Mapping[str, Any]) -> str:
    where = f"[{failure.get('suite')}] {failure.get('column') or '(table)'}"
    count = failure.get("unexpected_count")
    rows = f": {count} rows" if count is not None else ""
    return f"{where} {failure.get('expectation')}{rows} — {failure.get('description', '')}"


# ------------------------------------------------------------------------ page
def build_page(
    *, root: Path | None = None, base_url: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Everything the page shows, as plain data.

    Args:
        root: folder of the run folders; defaults to ``<RECSYS_HOME>/runs``.
        base_url: MLflow UI address for links; defaults to :func:`mlflow_ui_url`.
        name: registered model name; defaults to :func:`recsys.config.model_name`.

    Returns:
        ``model_name``, ``mlflow_url``, ``champion`` (:func:`build_champion`),
        ``latest`` (:func:`build_latest`), ``primary``, ``history``
        (:func:`metric_history`) and ``validations`` (:func:`validation_runs`).
    """
    root = root or config.runs_root()
    base_url = base_url or mlflow_ui_url()
    name = name or config.model_name()
    champion = build_champion(name, base_url)
    groups = group_runs(registry.list_training_runs(HISTORY_MLFLOW_RUNS))
    latest = build_latest(groups, champion, root, base_url)
    primary = latest["primary"] if latest else primary_metric(None, champion)
    return {
        "model_name": name,
        "mlflow_url": base_url,
        "champion": champion,
        "latest": latest,
        "primary": primary,
        "history": metric_history(groups, primary),
        "validations": validation_runs(root),
    }


def render_page(page: Mapping[str, Any]) -> str:
    """The page as HTML, charts included as inline SVG."""
    colors = model_colors(page)
    charts = {
        "leaderboard": leaderboard_chart(page["latest"], colors) if page.get("latest") else None,
        "history": history_chart(page["history"], page["primary"], colors)
        if page.get("history")
        else None,
    }
    return _templates().get_template("recommender.html").render(page=page, charts=charts)


def model_colors(page: Mapping[str, Any]) -> dict[str, str]:
    """One colour per model type, the same in every chart of the page."""
    latest = page.get("latest") or {}
    names = {row["model_type"] for row in latest.get("rows", [])}
    names.update(m for point in page.get("history", []) for m in point["scores"])
    palette = [
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
    ]
    return {name: palette[i % len(palette)] for i, name in enumerate(sorted(names))}


@functools.cache
def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["num"] = format_number
    return env


def format_number(value: object) -> str:
    """A metric for a table cell: whole numbers plainly, others to 4 decimals."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if not _is_number(value):
        return "—" if value is None else str(value)
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):d}"
    return f"{value:.4f}"


# ---------------------------------------------------------------------- charts
def leaderboard_chart(latest: Mapping[str, Any], colors: Mapping[str, str]) -> str | None:
    """Grouped bars of the top-K ranking metrics (``ndcg@K``, ``recall@K``...) per model, as SVG.

    Only plain ``name@K`` metrics are drawn: they share the 0-1 scale, unlike
    counts, timings, popularity or per-segment gaps (those stay in the table).
    """
    columns = [c for c in latest["columns"] if _AT_K.match(c)][:6]
    rows = latest["rows"]
    if not columns or not rows:
        return None
    fig, ax = _figure(7.5, 3.2)
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [row["metrics"].get(c, float("nan")) for c in columns]
        positions = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(columns))]
        champion = row["role"] == "champion"
        ax.bar(
            positions,
            values,
            width,
            label=row["model"],
            color=colors.get(row["model_type"]),
            hatch="//" if champion else None,
            edgecolor="#333333" if champion else None,
        )
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, ncols=min(len(rows), 3), loc="upper left", bbox_to_anchor=(0, -0.12))
    return _svg(fig)


def history_chart(
    history: list[Mapping[str, Any]], primary: str | None, colors: Mapping[str, str]
) -> str | None:
    """The primary metric of each model over pipeline runs (oldest left), as SVG."""
    if not history or not primary:
        return None
    models = sorted({m for point in history for m in point["scores"]})
    fig, ax = _figure(7.5, 3.0)
    x = list(range(len(history)))
    for model in models:
        ax.plot(
            x,
            [p["scores"].get(model, float("nan")) for p in history],
            marker="o",
            label=model,
            color=colors.get(model),
        )
    ax.set_xticks(x, [p["run_key"][-22:] for p in history], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(primary)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _svg(fig)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element (text kept as text, no XML prologue)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "recsys"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


# ------------------------------------------------------------------ file serving
def data_docs_file(root: Path, run_key: str, path: str) -> Path:
    """The Data Docs file ``path`` of run ``run_key``, guaranteed to lie inside its folder.

    Raises:
        PageError: the run key is not a plain folder name, or the file does
            not exist inside ``<root>/<run_key>/data_docs`` (``..``, absolute
            paths and links that lead outside are refused the same way).
    """
    if not _SAFE_KEY.match(run_key) or run_key in (".", ".."):
        raise PageError(f"no such run: {run_key!r}")
    docs = (root / run_key / rf.DATA_DOCS).resolve()
    target = (docs / (path or "index.html")).resolve()
    if not target.is_relative_to(docs) or not target.is_file():
        raise PageError(f"no Data Docs file {path!r} for run {run_key!r}")
    return target


def plot_bytes(run_id: str, path: str) -> bytes:
    """A PNG a run logged under ``plots/``.

    Raises:
        PageError: ``path`` is not one of the run's logged plots.
    """
    if not re.fullmatch(r"[0-9a-f]{32}", run_id):
        raise PageError(f"no such run: {run_id!r}")
    if path not in registry.list_run_artifacts(run_id, PLOTS_FOLDER) or not path.endswith(".png"):
        raise PageError(f"run {run_id} has no plot {path!r}")
    return registry.read_run_artifact(run_id, path)


# ------------------------------------------------------------------------- app
def create_app(
    *, authorize: Authorize | None, login_url: Callable[[str], str] | None = None
) -> FastAPI:
    """The FastAPI app behind the Recommender page.

    Args:
        authorize: awaited with the request before every route; it raises
            ``fastapi.HTTPException`` (401 when nobody is logged in, 403 when
            the user may not see the page). ``None`` serves everyone: only for
            tests and a trusted laptop.
        login_url: maps the requested URL to the login page's address; when
            given, a browser (``Accept: text/html``) refused with 401 is
            redirected there instead of getting the error.

    Routes: ``/`` the page, ``/page.json`` its data, ``/data-docs/<run>/<file>``
    the Great Expectations Data Docs of a run, ``/plots/<run_id>/<path>`` a
    plot a training run logged.
    """

    async def guard(request: Request) -> None:
        if authorize is not None:
            await authorize(request)

    app = FastAPI(
        title="recsys operator page",
        dependencies=[Depends(guard)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def refuse(request: Request, exc: HTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and login_url is not None and wants_html:
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return Response(
            json.dumps({"detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(render_page(build_page()))

    @app.get("/page.json")
    def page_data() -> Response:
        return Response(json.dumps(build_page(), default=str), media_type="application/json")

    @app.get("/data-docs/{run_key}/{path:path}")
    def data_docs(run_key: str, path: str) -> FileResponse:
        try:
            return FileResponse(data_docs_file(config.runs_root(), run_key, path))
        except PageError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/plots/{run_id}/{path:path}")
    def plot(run_id: str, path: str) -> Response:
        try:
            return Response(plot_bytes(run_id, path), media_type="image/png")
        except PageError as exc:
            raise HTTPException(404, str(exc)) from None

    return app
