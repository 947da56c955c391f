"""The FastAPI app behind the Recommender page, with the headers that keep it inert.

Every response (pages, JSON, files, errors, redirects) carries
:data:`CSP`: no script at all, nothing from another origin, framing only by
the same origin (Airflow's UI shows the page in an iframe), plus
``X-Content-Type-Options: nosniff``. Great Expectations' pages are served
rebuilt (:func:`recsys.ui.datadocs.sanitise_gx_html`) and under a ``sandbox``
policy as well, so even markup that slipped through would run in an opaque
origin, not Airflow's. A request for something that does not exist gets 404
with a message; an unexpected error gets a plain 500 without a traceback
(the traceback goes to the log).

The app never authenticates by itself: the caller passes ``authorize`` (the
Airflow plugin passes Airflow's own login check), so this module does not
import Airflow.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from recsys import config
from recsys.pipeline import runfolder as rf
from recsys.registry import views
from recsys.ui import datadocs, render
from recsys.ui.common import PageError
from recsys.ui.page import build_page
from recsys.ui.runs import PLOTS_FOLDER

log = logging.getLogger(__name__)

Authorize = Callable[[Request], Awaitable[None]]

#: The page's Content-Security-Policy: no script, no other origin, framed by its own only.
CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'self'"
)
#: Great Expectations' pages: the same, in a sandbox (an opaque origin, no scripts, no forms).
CSP_SANDBOX = f"{CSP}; sandbox allow-popups allow-popups-to-escape-sandbox"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: A run id as MLflow makes them.
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Files of a Data Docs folder served as they are (GX's stylesheets, fonts and images).
_STATIC_TYPES = {".css", ".png", ".gif", ".ico", ".otf", ".ttf", ".woff", ".woff2", ".jpg"}


def plot_bytes(run_id: str, path: str) -> bytes:
    """A PNG a training run logged under ``plots/``.

    Raises:
        PageError: no such run, or ``path`` is not one of its logged plots.
    """
    if not _RUN_ID.fullmatch(run_id) or views.get_run_summary(run_id) is None:
        raise PageError(f"no such run: {run_id!r}")
    if not path.endswith(".png") or path not in views.list_run_artifacts(run_id, PLOTS_FOLDER):
        raise PageError(f"run {run_id} has no plot {path!r}")
    return views.read_run_artifact(run_id, path)


def gx_page(run_key: str, path: str) -> Response:
    """One file of Great Expectations' Data Docs of a run, made safe to open.

    Raises:
        PageError: no such run or file, a file type not served, or
            pseudonymisation is on and the run was validated before it (its
            GX pages hold the batch's raw ids).
    """
    target = datadocs.data_docs_file(config.runs_root(), run_key, path)
    suffix = target.suffix.lower()
    if suffix == ".html":
        report = datadocs.run_folder(config.runs_root(), run_key).read_json_or_none(rf.VALIDATION)
        if datadocs.gx_withheld(report):
            raise PageError(
                "this run's Great Expectations pages were written before RECSYS_PSEUDONYM_KEY "
                "was set and hold the batch's raw ids, so they are not served; the validation "
                "report shows the results"
            )
        back = "../" * path.count("/")
        banner = (
            '<p class="sanitised-note">Great Expectations\' page, served without its scripts and '
            f'remote assets. <a href="{back or "./"}">Back to the validation report</a></p>'
        )
        text = datadocs.sanitise_gx_html(
            target.read_text(errors="replace"), render.gx_stylesheet(), banner
        )
        return HTMLResponse(text, headers={"Content-Security-Policy": CSP_SANDBOX})
    if suffix not in _STATIC_TYPES:
        raise PageError(f"no Data Docs file {path!r} for run {run_key!r}")
    media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return Response(target.read_bytes(), media_type=media)


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

    Routes: ``/`` the page (``?model=NAME`` picks the registered model),
    ``/page.json`` its data, ``/data-docs/<run>/`` the run's validation
    report, ``/data-docs/<run>/<file>`` Great Expectations' pages and files,
    ``/plots/<run_id>/<path>`` a plot a training run logged.
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

    @app.middleware("http")
    async def secure(request: Request, call_next: Callable) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            log.exception("the Recommender page failed on %s", request.url.path)
            response = Response(
                json.dumps({"detail": "internal error; the API server's log has the details"}),
                status_code=500,
                media_type="application/json",
            )
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    @app.exception_handler(HTTPException)
    async def refuse(request: Request, exc: HTTPException) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and login_url is not None and wants_html:
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        if wants_html:
            return HTMLResponse(
                render.render_error(
                    exc.status_code, str(exc.detail), request.scope.get("root_path", "")
                ),
                status_code=exc.status_code,
                headers=exc.headers,
            )
        return Response(
            json.dumps({"detail": exc.detail}),
            status_code=exc.status_code,
            media_type="application/json",
            headers=exc.headers,
        )

    @app.exception_handler(PageError)
    async def not_found(request: Request, exc: PageError) -> Response:
        return await refuse(request, HTTPException(404, str(exc)))

    @app.get("/", response_class=HTMLResponse)
    def page(model: str | None = None) -> HTMLResponse:
        return HTMLResponse(render.render_page(build_page(name=model)))

    @app.get("/page.json")
    def page_data(model: str | None = None) -> Response:
        body = json.dumps(build_page(name=model), default=str)
        return Response(body, media_type="application/json")

    @app.get("/data-docs/{run_key}/", response_class=HTMLResponse)
    def report(run_key: str) -> HTMLResponse:
        return HTMLResponse(render.render_report(datadocs.report_data(config.runs_root(), run_key)))

    @app.get("/data-docs/{run_key}")
    def report_slash(run_key: str) -> Response:
        datadocs.run_folder(config.runs_root(), run_key)
        return RedirectResponse(f"{run_key}/", status_code=307)

    @app.get("/data-docs/{run_key}/{path:path}")
    def data_docs(run_key: str, path: str) -> Response:
        if path in ("", "index.html"):
            return report(run_key)
        return gx_page(run_key, path)

    @app.get("/plots/{run_id}/{path:path}")
    def plot(run_id: str, path: str) -> Response:
        return Response(plot_bytes(run_id, path), media_type="image/png")

    return app
