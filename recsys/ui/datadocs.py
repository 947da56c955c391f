"""Data validation for people: the page's table, its own report, GX's pages made safe.

Great Expectations writes its Data Docs with the batch's values as raw HTML
(a user id ``<img src=x onerror=...>`` becomes an element) and loads
Bootstrap, jQuery and Vega from public CDNs, so offline its index is blank.
The page therefore serves:

- its own report of a run's validation (:func:`report_data`), built from
  ``validation.json``: every suite, every broken expectation with its rows
  and examples, escaped by the template and with user ids replaced by their
  pseudonyms when ``RECSYS_PSEUDONYM_KEY`` is set; it needs no script and no
  network;
- Great Expectations' own per-suite pages (:func:`sanitise_gx_html`) rebuilt
  from an allowlist of tags and attributes: no script, no event handler, no
  external resource; markup found inside a table cell (where GX puts the
  batch's values) is shown as the literal text it was. A run validated with
  ``RECSYS_PSEUDONYM_KEY`` set wrote them with pseudonyms (its
  ``validation.json`` says ``pseudonymised``); one validated before the key
  was set holds raw ids, so while a key is set its pages are not served
  (:func:`gx_withheld`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from recsys import config
from recsys.constants import USER_COL
from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder
from recsys.ui.common import PageError, format_time, pseudonym_key
from recsys.ui.runs import folder_model

#: How many pipeline runs the validation table lists.
VALIDATION_RUNS = 10
#: A run folder name as :func:`recsys.config.safe_name` makes it.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")


def run_folder(root: Path, run_key: str) -> RunFolder:
    """The run folder named ``run_key`` (a folder name, not a raw run id).

    Raises:
        PageError: the name is not a plain folder name or has no folder.
    """
    if not _SAFE_KEY.match(run_key) or run_key in (".", ".."):
        raise PageError(f"no such run: {run_key!r}")
    folder = RunFolder(run_key, root)
    if not folder.exists():
        raise PageError(f"no such run: {run_key!r}")
    return folder


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


# ------------------------------------------------------- the page's table
def validation_runs(
    root: Path, name: str, run_keys: Iterable[str], limit: int = VALIDATION_RUNS
) -> list[dict[str, Any]]:
    """Data validation of the model's newest pipeline runs, and of every rejected batch.

    A folder is the model's when its run key is among ``run_keys`` (the
    model's MLflow runs) or its records name the model (:func:`folder_model`).
    A batch that failed validation never reached a model (no MLflow run, no
    evaluation) and is listed for every model, labelled ``rejected``. Newest
    report first.

    Returns:
        ``[{"run_key", "checked_at", "success", "scope" ("model" |
        "rejected"), "suites": [{"name", "success", "rows", "failures"}],
        "failures": [readable lines], "report_url"}]``; URLs are relative to the page.
    """
    if not root.is_dir():
        return []
    folders = {config.safe_name(k) for k in run_keys}
    reports = sorted(root.glob(f"*/{rf.VALIDATION}"), key=_mtime, reverse=True)
    rows = []
    for path in reports:
        folder = RunFolder(path.parent.name, root)
        report = folder.read_json_or_none(rf.VALIDATION)
        report = report if isinstance(report, dict) else {}
        ours = path.parent.name in folders or folder_model(folder) == name
        if ours or report.get("success") is not True:
            rows.append(_validation_row(path, report, "model" if ours else "rejected"))
        if len(rows) >= limit:
            break
    return rows


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _validation_row(path: Path, report: Mapping[str, Any], scope: str) -> dict[str, Any]:
    suites = report.get("suites") if isinstance(report.get("suites"), Mapping) else {}
    key = _key_to_apply(report)
    return {
        "run_key": path.parent.name,
        "checked_at": format_time(_mtime(path) * 1000),
        "success": report.get("success") is True,
        "scope": scope,
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
            failure_line(safe_failure(f, key))
            for f in report.get("failures") or []
            if isinstance(f, Mapping)
        ],
        "report_url": f"data-docs/{quote(path.parent.name)}/",
    }


def _key_to_apply(report: Mapping[str, Any]) -> bytes | None:
    """The key to pseudonymise a report's examples with: none when the report
    holds pseudonyms already (validated under a key) or no key is set."""
    return None if report.get("pseudonymised") is True else pseudonym_key()


def gx_withheld(report: Mapping[str, Any] | None) -> bool:
    """Whether a run's Great Expectations pages must not be served: a key is
    set and the run was validated without one (its pages hold raw ids)."""
    pseudonymised = isinstance(report, Mapping) and report.get("pseudonymised") is True
    return pseudonym_key() is not None and not pseudonymised


def failure_line(failure: Mapping[str, Any]) -> str:
    """One failure as a line: where, which rule, how many rows, examples."""
    where = f"[{failure.get('suite')}] {failure.get('column') or '(table)'}"
    count = failure.get("unexpected_count")
    rows = f": {count} rows" if count is not None else ""
    examples = list(dict.fromkeys(map(example_text, failure.get("examples") or [])))
    tail = f"; e.g. {' | '.join(examples[:3])}" if examples else ""
    return f"{where} {failure.get('description', failure.get('expectation'))}{rows}{tail}"


def example_text(value: object) -> str:
    """One broken value as text; a compound one (a row of several columns) as ``col=value, ...``."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def safe_failure(failure: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    """A failure whose user-id examples are pseudonyms when ``key`` is set.

    A report written without a key holds the batch's raw values; every user
    id among them (a ``user_id`` column, or a ``user_id`` field of a compound
    example) is replaced by its keyed pseudonym, the same one the run's later
    steps use. (A report written under a key holds pseudonyms already: its
    callers pass no key.)
    """
    out = dict(failure)
    examples = list(failure.get("examples") or [])
    if key is None or not examples:
        return out
    from recsys.data.prepare import pseudonymise_ids

    columns = str(failure.get("column") or "").split(",")
    if USER_COL in columns and len(columns) == 1:
        out["examples"] = pseudonymise_ids(examples, key)
    else:
        out["examples"] = [
            {**e, USER_COL: pseudonymise_ids([e[USER_COL]], key)[0]}
            if isinstance(e, Mapping) and USER_COL in e
            else e
            for e in examples
        ]
    return out


# ------------------------------------------------------------------ the report
def report_data(root: Path, run_key: str) -> dict[str, Any]:
    """A run's validation as the report page shows it.

    Returns:
        ``run_key``, ``name`` (the data set's label), ``success``,
        ``checked_at``, ``pseudonymised``, ``suites`` (``[{"name", "success",
        "rows", "evaluated", "failed", "passed", "skipped", "parameters",
        "failures"}]``, each failure with ``examples`` safe to show) and
        ``gx_pages`` (``[{"title", "url"}]``, empty when withheld) and
        ``gx_withheld`` (:func:`gx_withheld`).

    Raises:
        PageError: no such run, or the run has no ``validation.json``.
    """
    folder = run_folder(root, run_key)
    report = folder.read_json_or_none(rf.VALIDATION)
    if not isinstance(report, dict):
        raise PageError(f"run {run_key!r} has no validation report")
    key = _key_to_apply(report)
    suites = report.get("suites") if isinstance(report.get("suites"), Mapping) else {}
    path = folder.file(rf.VALIDATION)
    withheld = gx_withheld(report)
    return {
        "run_key": run_key,
        "name": report.get("name"),
        "success": report.get("success") is True,
        "checked_at": format_time(path.stat().st_mtime * 1000),
        "pseudonymised": key is not None or report.get("pseudonymised") is True,
        "suites": [
            _suite(name, s, key) for name, s in sorted(suites.items()) if isinstance(s, Mapping)
        ],
        "gx_pages": [] if withheld else gx_pages(folder),
        "gx_withheld": withheld,
    }


def _suite(name: str, suite: Mapping[str, Any], key: bytes | None) -> dict[str, Any]:
    failures = [safe_failure(f, key) for f in suite.get("failures") or [] if isinstance(f, Mapping)]
    evaluated = suite.get("evaluated")
    return {
        "name": name,
        "success": bool(suite.get("success")),
        "rows": suite.get("row_count"),
        "evaluated": evaluated,
        "failed": len(failures),
        "passed": evaluated - len(failures) if isinstance(evaluated, int) else None,
        "skipped": [str(s) for s in suite.get("skipped") or []],
        "parameters": dict(suite.get("parameters") or {}),
        "failures": [
            {
                **f,
                "rule": expectation_words(str(f.get("expectation"))),
                "examples": list(dict.fromkeys(map(example_text, f.get("examples") or []))),
            }
            for f in failures
        ],
    }


def expectation_words(expectation: str) -> str:
    """``expect_column_values_to_match_regex`` → ``column values match regex``."""
    text = expectation.removeprefix("expect_").replace("_to_be_", " are ").replace("_to_", " ")
    return text.replace("_", " ")


def gx_pages(folder: RunFolder) -> list[dict[str, str]]:
    """Great Expectations' own pages of a run: one validation page per suite, then suites."""
    docs = folder.data_docs
    pages = []
    for page in sorted(docs.glob("validations/**/*.html")):
        suite = page.relative_to(docs).parts[1]
        pages.append({"title": f"validation of {suite}", "path": page})
    for page in sorted(docs.glob("expectations/*.html")):
        pages.append({"title": f"expectation suite {page.stem}", "path": page})
    return [
        {"title": p["title"], "url": quote(p["path"].relative_to(docs).as_posix())} for p in pages
    ]


# ------------------------------------------------------- GX pages, made safe
#: Tags kept (with the attributes in ``_ATTRS``); all others are dropped or shown as text.
_TAGS = frozenset(
    "html head body title div span p a table thead tbody tfoot tr th td caption ul ol li dl dt "
    "dd strong em b i u small code pre h1 h2 h3 h4 h5 h6 nav footer header main section article "
    "aside br hr sup sub blockquote abbr".split()
)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
#: Dropped with everything inside them (outside a table cell).
_DROP = frozenset(
    "script style noscript template iframe frame frameset object embed svg math form "
    "button select textarea option canvas video audio head".split()
)
_ATTRS = frozenset({"class", "id", "title", "colspan", "rowspan", "href", "role"})
#: Elements whose content is the batch's data: markup inside them is shown as text.
_CELLS = frozenset({"td", "th", "li", "dd", "pre", "code"})


def sanitise_gx_html(text: str, stylesheet: str, banner: str = "") -> str:
    """A Great Expectations page rebuilt from safe parts, with ``stylesheet`` inlined.

    Kept: text, and an allowlist of structural tags with ``class``, ``id``,
    ``title``, ``colspan``, ``rowspan``, ``role`` and relative ``href``s.
    Dropped: scripts, styles, stylesheets, images, forms, frames, every event
    handler and every absolute or ``javascript:`` link. Markup inside a table
    cell or list item is the batch's data, so it is kept as escaped text:
    ``<script>alert(1)</script>`` in a cell reads as exactly that. ``banner``
    (trusted markup) opens the body.
    """
    parser = _Sanitiser()
    parser.feed(text)
    parser.close()
    title = html.escape(parser.title.strip() or "Great Expectations Data Docs")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>\n{stylesheet}\n</head>\n<body>{banner}"
        f"{''.join(parser.out)}</body></html>\n"
    )


class _Sanitiser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.title = ""
        self._open: list[str] = []
        self._skip: list[str] = []
        self._in_title = False

    def _in_cell(self) -> bool:
        return any(tag in _CELLS for tag in self._open)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and not self._open:
            self._in_title = True
            return
        if self._skip:
            if tag == self._skip[-1] and tag not in _VOID:
                self._skip.append(tag)
            return
        if tag in _TAGS and tag not in ("html", "head", "body"):
            self.out.append(f"<{tag}{_attributes(attrs)}>")
            if tag not in _VOID:
                self._open.append(tag)
        elif tag in ("html", "body"):
            return
        elif self._in_cell():
            self.out.append(html.escape(self.get_starttag_text() or f"<{tag}>"))
            if tag not in _VOID:
                self._open.append(f"!{tag}")
        elif tag in _DROP and tag not in _VOID:
            self._skip.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID or self._skip:
            self.handle_starttag(tag, attrs)
            return
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            return
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        for marker in (tag, f"!{tag}"):
            if marker in self._open:
                self._close_until(marker)
                return
        if self._in_cell() and tag not in _TAGS:
            self.out.append(html.escape(f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.out.append(html.escape(data, quote=False))

    def close(self) -> None:
        super().close()
        self._close_until(None)

    def _close_until(self, marker: str | None) -> None:
        """Close open elements, innermost first, down to ``marker`` (all for ``None``)."""
        while self._open:
            top = self._open.pop()
            self.out.append(html.escape(f"</{top[1:]}>") if top.startswith("!") else f"</{top}>")
            if top == marker:
                return


def _attributes(attrs: list[tuple[str, str | None]]) -> str:
    kept = []
    for name, value in attrs:
        if name not in _ATTRS or value is None:
            continue
        if name == "href" and not _relative(value):
            continue
        kept.append(f' {name}="{html.escape(value, quote=True)}"')
    return "".join(kept)


def _relative(href: str) -> bool:
    """A link inside the Data Docs folder: no scheme, no host, no backslash tricks."""
    value = href.strip()
    return not re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//|\\)", value) and "\\" not in value
