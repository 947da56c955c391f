"""The recommendation service: the champion's answers over HTTP, in milliseconds.

Routes (JSON unless said):

- ``GET /recommendations/{user_id}?k=&exclude=&genres=``: the user's top-K.
  ``exclude`` and ``genres`` are comma-separated (items never to return; only
  items of these genres). The answer says who served it (``served_by``:
  ``batch`` from the Redis cache of the batch lists, ``model`` from the model
  at request time, or the cold-start path: ``onboarding``,
  ``segment:<kind>``, ``global``), which alias (``variant``) and version.
  ``Cache-Control: no-cache`` skips the cache;
- ``POST /recommendations``: the same with a body, and the user's
  ``recent_items`` folded in without retraining where the model allows it
  (:mod:`recsys.serving.online`), plus a new user's onboarding answer
  (``age``, ``gender``, ``occupation``, ``liked_genres``);
- ``GET /similar/{item_id}?k=``: related items (co-liked and similar content);
- ``GET /health`` (the process answers), ``GET /ready`` (503 until a champion
  is loaded), ``GET /metrics`` (Prometheus text).

Bad input gets a 4xx with a ``detail`` message; no champion gets 503. With
``RECSYS_PSEUDONYM_KEY`` set, user ids are mapped to their pseudonyms before
anything else and only pseudonyms reach the logs.

Why FastAPI on uvicorn: the Airflow 3 plugin already runs on it, so it adds
no framework; request bodies are checked by pydantic into readable 4xx
messages; its async handlers answer cache hits on the event loop (Redis via
``redis.asyncio``) while model scoring runs in the thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from recsys.errors import InputError
from recsys.registry.snapshot import CHAMPION
from recsys.service.config import ServiceConfig
from recsys.service.holder import CHALLENGER, Loaded, ModelHolder
from recsys.service.metrics import Metrics
from recsys.serving.online import Answer, Ask, OnlineModel, UnknownGenresError, UnknownItemsError

log = logging.getLogger(__name__)
access_log = logging.getLogger("recsys.service.access")

SERVED_BY_BATCH = "batch"
_JSON = "application/json"

Id = StrictInt | StrictStr


class RecommendationRequest(BaseModel):
    """The body of ``POST /recommendations``."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id = Field(description="the user's id, as in the data (any id of a new user)")
    recent_items: list[Id] = Field(
        default_factory=list,
        max_length=1000,
        description="items the user interacted with since the model was trained, oldest first",
    )
    k: StrictInt | None = Field(default=None, description="list length")
    exclude: list[Id] = Field(default_factory=list, max_length=10_000)
    genres: list[StrictStr] = Field(default_factory=list, max_length=100)
    liked_genres: list[StrictStr] = Field(default_factory=list, max_length=100)
    age: float | None = Field(default=None, ge=0, le=150)
    gender: StrictStr | None = None
    occupation: StrictStr | None = None


class HTTPProblem(Exception):
    """An answer other than 200, with a message for the caller."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(
    settings: ServiceConfig | None = None,
    *,
    holder: ModelHolder | None = None,
    cache: Any = None,
) -> FastAPI:
    """The service as an ASGI app.

    Args:
        settings: what to serve and how (default: from the environment).
        holder: the versions that answer (default: one following the aliases
            of ``settings.model_name``, started with the app).
        cache: the batch cache (default: :class:`recsys.serving.cache.BatchCache`
            on ``settings.redis_url``, none without one).
    """
    settings = settings or ServiceConfig.from_env()
    service = _Service(settings, holder, cache)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="recsys",
        summary="The champion's recommendations in real time",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(_Observe, service=service)

    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> Response:
        return _json({"detail": exc.detail}, exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        return _json({"detail": _validation_message(exc)}, 422)

    @app.get("/health")
    async def health() -> Response:
        """The process is up (says nothing about the model: see ``/ready``)."""
        return _json({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        """200 once a champion is loaded, else 503 with what is missing."""
        return _json(*await service.readiness())

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics: requests, latency, who served, fallbacks, cache, versions."""
        body, content_type = service.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/recommendations/{user_id}")
    async def recommendations(
        user_id: str,
        request: Request,
        k: str | None = None,
        exclude: str | None = None,
        genres: str | None = None,
    ) -> Response:
        """The user's top-K (``exclude`` and ``genres`` are comma-separated lists)."""
        return _json(
            await service.recommend(
                request,
                user_id,
                k=service.parse_k(k),
                exclude=_split(exclude),
                genres=_split(genres),
            )
        )

    @app.post("/recommendations")
    async def recommendations_with_history(
        body: RecommendationRequest, request: Request
    ) -> Response:
        """The user's top-K with their recent items folded in (see the module docstring)."""
        demographics = {
            c: getattr(body, c) for c in ("age", "gender", "occupation") if getattr(body, c)
        }
        return _json(
            await service.recommend(
                request,
                body.user_id,
                k=service.parse_k(body.k),
                exclude=body.exclude,
                genres=body.genres,
                recent=body.recent_items,
                demographics=demographics,
                liked_genres=body.liked_genres,
            )
        )

    @app.get("/similar/{item_id}")
    async def similar(item_id: str, request: Request, k: str | None = None) -> Response:
        """Items related to ``item_id``: co-liked with it, or of similar content."""
        return _json(await service.similar(request, item_id, service.parse_k(k)))

    return app


class _Service:
    """What the routes share: settings, the loaded versions, the cache, the metrics."""

    def __init__(self, settings: ServiceConfig, holder: ModelHolder | None, cache: Any) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._own_holder = holder is None
        self.holder = holder or self._make_holder()
        if self.holder.on_change is None:
            self.holder.on_change = self.metrics.version_changed
        for alias in self.holder.aliases:
            loaded = self.holder.get(alias)
            self.metrics.version_changed(alias, None if loaded is None else loaded.version)
        if cache is None and settings.redis_url:
            from recsys.serving.cache import BatchCache

            cache = BatchCache(settings.redis_url, prefix=settings.cache_prefix, timeout_s=0.1)
        self.cache = cache
        self.model_name = self.holder.name
        self._scoring: anyio.CapacityLimiter | None = None
        self.batches = _Batches(self._scored, settings.max_batch, self.metrics)

    async def _scored(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` (a model's scoring) in a worker thread, one call at a time per process.

        Scoring is CPU-bound and made of many short NumPy, SciPy and XGBoost
        calls: several of them side by side in one process contend for the
        GIL and each takes longer, while the process runs no faster. Queued
        here, first come first served, each answer takes its own time; a
        second core is used by a second worker process (``--workers``).
        """
        if self._scoring is None:
            self._scoring = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._scoring
        )

    def _make_holder(self) -> ModelHolder:
        from recsys.registry.snapshot import default_model

        aliases = (CHAMPION, CHALLENGER) if self.settings.challenger_share > 0 else (CHAMPION,)
        return ModelHolder(
            self.settings.model_name or default_model(),
            aliases,
            root=self.settings.serving_root,
            poll_s=self.settings.poll_s,
        )

    def start(self) -> None:
        if self._own_holder:
            self.holder.start()
        log.info(
            "serving %s (aliases %s; cache %s; challenger share %.2f)",
            self.holder.name,
            ", ".join(self.holder.aliases),
            "on" if self.cache is not None else "off",
            self.settings.challenger_share,
        )

    async def close(self) -> None:
        if self._own_holder:
            await run_in_threadpool(self.holder.stop)
        if self.cache is not None:
            await self.cache.close()

    # --------------------------------------------------------------- checks
    def parse_k(self, raw: str | int | None) -> int:
        """``k`` of a request: the default when absent, else a whole number in 1..max_k."""
        if raw is None:
            return self.settings.default_k
        try:
            k = int(raw)
        except (TypeError, ValueError):
            raise HTTPProblem(400, f"k must be a whole number, got {raw!r}") from None
        if not 1 <= k <= self.settings.max_k:
            raise HTTPProblem(400, f"k must lie in 1..{self.settings.max_k}, got {k}")
        return k

    def _loaded(self, alias: str = CHAMPION) -> Loaded:
        loaded = self.holder.get(alias)
        if loaded is None:
            why = self.holder.last_error.get(alias) or "it is still loading"
            raise HTTPProblem(
                503,
                f"no champion of {self.model_name!r} is loaded yet ({why}); "
                "train one with `recsys train` or the recsys_training DAG",
            )
        return loaded

    def pick(self, user_text: str) -> Loaded:
        """The version that serves this user: the challenger for the A/B share, when
        one is loaded, else the champion (stable: the same id, the same bucket)."""
        champion = self._loaded(CHAMPION)
        share = self.settings.challenger_share
        if share > 0 and bucket(user_text, self.settings.ab_salt) < share:
            challenger = self.holder.get(CHALLENGER)
            if challenger is not None:
                return challenger
        return champion

    async def readiness(self) -> tuple[dict[str, Any], int]:
        versions = {alias: self.holder.get(alias) for alias in self.holder.aliases}
        body: dict[str, Any] = {
            "ready": self.holder.ready,
            "model": self.model_name,
            **{a: (v.describe() if v else None) for a, v in versions.items()},
            "challenger_share": self.settings.challenger_share,
            "cache": "off" if self.cache is None else ("up" if await self.cache.ping() else "down"),
        }
        if not self.holder.ready:
            why = self.holder.last_error.get(CHAMPION) or "it is still loading"
            body["detail"] = f"no champion of {self.model_name!r} is loaded yet ({why})"
            return body, 503
        return body, 200

    # -------------------------------------------------------------- answers
    async def recommend(
        self,
        request: Request,
        user_id: int | str,
        *,
        k: int,
        exclude: list[Any],
        genres: list[str],
        recent: list[Any] = (),
        demographics: dict[str, Any] | None = None,
        liked_genres: list[str] = (),
    ) -> dict[str, Any]:
        user_text = str(user_id)
        loaded = self.pick(user_text)
        online = loaded.online
        asked = self._asked(user_id, online)
        request.state.user = asked if self.settings.pseudonym_key else user_text
        request.state.variant = loaded.alias
        try:
            excluded = online.item_columns(exclude, "exclude")
            mask = online.genre_mask(genres)
        except UnknownItemsError as exc:
            raise HTTPProblem(400, str(exc)) from None
        except UnknownGenresError as exc:
            raise HTTPProblem(400, str(exc)) from None
        answer = None
        if not recent and self._cache_allowed(request):
            answer = await self._from_cache(loaded, asked, k, excluded, mask)
        if answer is None:
            ask = Ask(asked, k, excluded, mask, tuple(recent), demographics, tuple(liked_genres))
            try:
                answer = await self.batches.answer(online, ask)
            except InputError as exc:
                raise HTTPProblem(400, str(exc)) from None
        self.metrics.served(answer.served_by, loaded.alias, answer.fallback)
        request.state.served_by = answer.served_by
        return self._body(user_id, loaded, k, answer)

    def _asked(self, user_id: int | str, online: Any) -> object:
        """The id the model knows: its pseudonym when pseudonymisation is on."""
        key = self.settings.pseudonym_key
        if key:
            from recsys.data.prepare import pseudonymise_ids

            return pseudonymise_ids([user_id], key)[0]
        return online.user_id(user_id)

    def _cache_allowed(self, request: Request) -> bool:
        if self.cache is None:
            return False
        return "no-cache" not in request.headers.get("cache-control", "").lower()

    async def _from_cache(
        self, loaded: Loaded, asked: object, k: int, excluded: Any, mask: Any
    ) -> Answer | None:
        """The batch list, filtered as asked, when it still holds ``k`` items (never for a
        forgotten user: their cached list predates the forget request)."""
        if loaded.online.forgotten(asked):
            self.metrics.cache("miss")
            return None
        try:
            hit = await self.cache.get(self.model_name, loaded.version, asked)
        except Exception as exc:  # noqa: BLE001 - a cache that fails is a miss
            self.metrics.cache("error")
            self.metrics.fallback("cache_error")
            log.debug("cache read failed: %s", exc)
            return None
        if hit is None:
            self.metrics.cache("miss")
            return None
        items, scores = hit.items, hit.scores
        if len(excluded) or mask is not None:
            drop = set(loaded.online.items[excluded].tolist()) if len(excluded) else set()
            passes = loaded.online.in_genres(items, mask) if mask is not None else None
            kept = [
                (i, s)
                for n, (i, s) in enumerate(zip(items, scores, strict=True))
                if i not in drop and (passes is None or passes[n])
            ]
            items, scores = [i for i, _ in kept], [s for _, s in kept]
        if len(items) < k:
            self.metrics.cache("short")
            return None
        self.metrics.cache("hit")
        return Answer(items=items[:k], scores=scores[:k], served_by=SERVED_BY_BATCH)

    def _body(self, user_id: object, loaded: Loaded, k: int, answer: Answer) -> dict[str, Any]:
        titles = loaded.titles
        items = [
            {"item_id": item, "score": round(score, 6), "rank": rank}
            | ({"title": titles[item]} if item in titles else {})
            for rank, (item, score) in enumerate(zip(answer.items, answer.scores, strict=True), 1)
        ]
        body = {
            "user_id": user_id,
            "model": self.model_name,
            "model_version": loaded.version,
            "model_type": loaded.model_type,
            "variant": loaded.alias,
            "served_by": answer.served_by,
            "k": k,
            "items": items,
        }
        if answer.folded_in:
            body["folded_in"] = answer.folded_in
        if answer.ignored:
            body["ignored_items"] = answer.ignored
        if answer.fallback:
            body["fallback"] = answer.fallback
        return body

    async def similar(self, request: Request, item_id: str, k: int) -> dict[str, Any]:
        loaded = self._loaded(CHAMPION)
        online = loaded.online
        cols = online.item_columns([item_id], "the catalogue", strict=False)
        if not cols.size:
            raise HTTPProblem(404, f"unknown item id {item_id!r}: not in the catalogue")
        answer = await self._scored(online.similar, int(cols[0]), k)
        request.state.served_by = answer.served_by
        body = self._body(None, loaded, k, answer)
        del body["user_id"]
        return {"item_id": online.items[int(cols[0])], **body}


class _Batches:
    """Requests that need the model, scored together when they arrive together.

    A request joins the queue; while no batch is being scored, the queue (up
    to ``max_size`` requests, oldest first) goes to the scoring thread as one
    :meth:`~recsys.serving.online.OnlineModel.recommend_many` call per loaded
    version, and the next batch is whatever queued meanwhile. Nothing waits
    for a batch to fill: an idle service scores a lone request at once, and a
    busy one shares each model call among the requests that queued behind the
    last (the way dynamic batching in model servers works), so throughput
    grows with load instead of the queue.

    Args:
        run: runs a function in the scoring thread (:meth:`_Service._scored`).
        max_size: the most requests in one scoring call.
        metrics: where each batch's size is observed.
    """

    def __init__(self, run: Any, max_size: int, metrics: Metrics) -> None:
        self._run = run
        self.max_size = max_size
        self._metrics = metrics
        self._queue: list[tuple[OnlineModel, Ask, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None

    async def answer(self, online: OnlineModel, ask: Ask) -> Answer:
        """``ask``'s answer from ``online`` (raises the request's own ``InputError``)."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((online, ask, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_size], self._queue[self.max_size :]
            self._metrics.batch(len(batch))
            try:
                answers = await self._run(_answer_all, [(o, a) for o, a, _ in batch])
            except Exception as exc:  # noqa: BLE001 - each request gets the failure
                answers = [exc] * len(batch)
            for (_, _, future), answer in zip(batch, answers, strict=True):
                if future.done():  # the client went away
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


def _answer_all(asked: list[tuple[OnlineModel, Ask]]) -> list[Answer | Exception]:
    """Each request's answer, one ``recommend_many`` call per model version."""
    answers: list[Answer | Exception | None] = [None] * len(asked)
    by_model: dict[int, list[int]] = {}
    for n, (online, _) in enumerate(asked):
        by_model.setdefault(id(online), []).append(n)
    for positions in by_model.values():
        online = asked[positions[0]][0]
        for n, answer in zip(
            positions, online.recommend_many([asked[n][1] for n in positions]), strict=True
        ):
            answers[n] = answer
    return answers  # type: ignore[return-value]


def bucket(user_text: str, salt: str) -> float:
    """A user's A/B bucket in [0, 1): a stable hash of the id (the same id, the
    same bucket, in every process and release)."""
    digest = hashlib.sha256(f"{salt}\0{user_text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Observe:
    """Counts and times every request by route template (never by raw path: ids stay
    out of metrics), and writes the access log line without the id in clear."""

    def __init__(self, app: Any, service: _Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.service.metrics.request(template, scope["method"], status["code"], elapsed)
            if self.service.settings.access_log:
                state = scope.get("state") or {}
                access_log.info(
                    "%s %s %d %.1fms user=%s variant=%s served_by=%s",
                    scope["method"],
                    template,
                    status["code"],
                    elapsed * 1000,
                    state.get("user", "-"),
                    state.get("variant", "-"),
                    state.get("served_by", "-"),
                )


def _json(body: Any, status: int = 200) -> Response:
    """A JSON answer, ending in a newline (``curl`` in a terminal prints one per line)."""
    return Response(json.dumps(body, default=_plain).encode() + b"\n", status, media_type=_JSON)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _split(raw: str | None) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()] if raw else []


def _validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line a person reads: ``where: what``."""
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "malformed request: the body is not valid JSON"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "malformed request: " + "; ".join(parts)


def _version() -> str:
    from recsys import __version__

    return __version__


def log_config(level: str = "INFO") -> dict[str, Any]:
    """Logging for the server processes (uvicorn applies it in every worker): one
    line per event on stderr; uvicorn's own access log stays off (it writes raw
    paths, ids included), :class:`_Observe` writes ours."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "recsys": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def serve(settings: ServiceConfig) -> None:
    """Run the service until interrupted (uvicorn; ``settings.workers`` processes).

    Each worker builds its app from the environment, so the settings are put
    there first. Numerical libraries get one thread per request unless
    ``OMP_NUM_THREADS`` says otherwise: requests run side by side in the thread
    pool, and a BLAS or OpenMP pool per request only fights them for the cores
    (the ranker's boosters answered one user in 108 ms with two OpenMP threads
    on a busy 2-core machine, in 6 ms with one).
    """
    import os

    import uvicorn
    from threadpoolctl import threadpool_limits

    for name, value in _as_env(settings).items():
        os.environ[name] = value
    threads = os.environ.setdefault("OMP_NUM_THREADS", "1")
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    threadpool_limits(limits=int(threads))  # the libraries already loaded (numpy's BLAS)
    uvicorn.run(
        "recsys.service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(),
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


def _as_env(settings: ServiceConfig) -> dict[str, str]:
    env = {
        "RECSYS_SERVE_HOST": settings.host,
        "RECSYS_SERVE_PORT": str(settings.port),
        "RECSYS_SERVE_WORKERS": str(settings.workers),
        "RECSYS_SERVE_POLL_SECONDS": str(settings.poll_s),
        "RECSYS_SERVE_MAX_K": str(settings.max_k),
        "RECSYS_SERVE_MAX_BATCH": str(settings.max_batch),
        "RECSYS_SERVE_ACCESS_LOG": "1" if settings.access_log else "0",
        "RECSYS_AB_CHALLENGER_SHARE": str(settings.challenger_share),
        "RECSYS_AB_SALT": settings.ab_salt,
        "RECSYS_CACHE_PREFIX": settings.cache_prefix,
    }
    if settings.model_name:
        env["RECSYS_SERVE_MODEL"] = settings.model_name
    if settings.redis_url:
        env["RECSYS_REDIS_URL"] = settings.redis_url
    return env
