"""The versions that answer: the champion (and the challenger), followed as the aliases move.

:class:`ModelHolder` reads the aliases cheaply every ``poll_s`` seconds
(:func:`recsys.registry.snapshot.read_alias`: a read-only query of the
tracking store, no ``mlflow`` import). When an alias points at a version it
does not hold, it downloads that version once (:class:`Snapshot`), loads it
*beside* the one serving, answers one warm-up request with it, and only then
swaps the reference: a request already running finishes on the old version,
the next one gets the new, none is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys.errors import NotFoundError
from recsys.registry.snapshot import CHAMPION, Copy, Snapshot, read_alias
from recsys.serving.online import OnlineModel

log = logging.getLogger(__name__)

CHALLENGER = "challenger"


@dataclass(frozen=True)
class Loaded:
    """One version ready to answer.

    Attributes:
        alias: the alias it was loaded for.
        version: the registered version.
        model_type: ``ease``, ``ranker``...
        online: the model, with its filters and fold-in.
        titles: item id → title (empty when the data has none).
        loaded_at: when it started answering (epoch seconds).
    """

    alias: str
    version: int
    model_type: str | None
    online: OnlineModel
    titles: dict[Any, str] = field(default_factory=dict)
    loaded_at: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_type": self.model_type,
            "folds_in": bool(self.online.model.folds_in),
            "loaded_at": self.loaded_at,
        }


class ModelHolder:
    """Holds the loaded version of each followed alias and keeps it current.

    Args:
        name: the registered model.
        aliases: the aliases to follow (``champion`` first).
        root: where the local copies live (default ``<RECSYS_HOME>/serving``).
        poll_s: seconds between reads of the aliases.
        on_change: called with ``(alias, version or None)`` after every swap.
    """

    def __init__(
        self,
        name: str,
        aliases: tuple[str, ...] = (CHAMPION,),
        *,
        root: Path | None = None,
        poll_s: float = 5.0,
        on_change: Callable[[str, int | None], None] | None = None,
    ) -> None:
        self.name = name
        self.aliases = aliases
        self.poll_s = poll_s
        self.on_change = on_change
        self._snapshots = {alias: Snapshot(name, root, alias) for alias in aliases}
        self._loaded: dict[str, Loaded | None] = dict.fromkeys(aliases)
        self.last_error: dict[str, str | None] = dict.fromkeys(aliases)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._polled = False

    # -------------------------------------------------------------- reading
    def get(self, alias: str = CHAMPION) -> Loaded | None:
        """The version serving ``alias`` now, or ``None``."""
        return self._loaded.get(alias)

    @property
    def ready(self) -> bool:
        """Whether a champion is loaded and every followed alias was looked at once
        (so an A/B split is in force from the first answer a balancer sends)."""
        return self._polled and self._loaded.get(CHAMPION) is not None

    # -------------------------------------------------------------- polling
    def start(self) -> None:
        """Load what the aliases point at, then follow them, in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recsys-alias-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following (the loaded versions stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_s)

    def poll_once(self) -> None:
        """Read every alias once and load the versions that changed (errors are logged
        and kept in :attr:`last_error`; what serves keeps serving)."""
        with self._lock:
            for alias in self.aliases:
                try:
                    self._follow(alias)
                    self.last_error[alias] = None
                except Exception as exc:  # noqa: BLE001 - keep serving what is loaded
                    error = f"{type(exc).__name__}: {exc}"
                    if error != self.last_error[alias]:  # once, not every poll
                        level = logging.INFO if isinstance(exc, NotFoundError) else logging.WARNING
                        log.log(level, "cannot follow %s@%s: %s", self.name, alias, exc)
                    self.last_error[alias] = error
            self._polled = True

    def _follow(self, alias: str) -> None:
        told, version = read_alias(self.name, alias)
        held = self._loaded[alias]
        if told and version is None:
            if held is not None:  # a promoted challenger loses its alias: no alarm
                level = logging.WARNING if alias == CHAMPION else logging.INFO
                log.log(level, "%s has no %s any more; it stops answering", self.name, alias)
                self._swap(alias, None)
            return
        if told and held is not None and held.version == version:
            return
        copy = self._copy(alias, version if told else None)
        if held is not None and held.version == copy.version:
            return
        self._swap(alias, self._load(alias, copy))

    def _copy(self, alias: str, version: int | None) -> Copy:
        """The local copy of ``version`` (``None``: ask MLflow which), refreshed if needed."""
        snapshot = self._snapshots[alias]
        held = snapshot.current()
        if version is not None and held is not None and held.version == version:
            return held
        try:
            return snapshot.refresh()
        except NotFoundError:
            if self._loaded[alias] is not None:
                self._swap(alias, None)
            raise

    def _load(self, alias: str, copy: Copy) -> Loaded:
        start = time.perf_counter()
        snapshot = self._snapshots[alias]
        online = OnlineModel(snapshot.served(copy))
        _warm_up(online)
        loaded = Loaded(
            alias=alias,
            version=copy.version,
            model_type=copy.model_type,
            online=online,
            titles=snapshot.titles(copy),
            loaded_at=time.time(),
        )
        log.info(
            "%s@%s: version %s (%s) loaded in %.1fs",
            self.name,
            alias,
            copy.version,
            copy.model_type,
            time.perf_counter() - start,
        )
        return loaded

    def _swap(self, alias: str, loaded: Loaded | None) -> None:
        self._loaded[alias] = loaded
        if self.on_change is not None:
            self.on_change(alias, None if loaded is None else loaded.version)


def _warm_up(online: OnlineModel) -> None:
    """Answer one known and one unknown user, so the first real request pays no
    first-call cost (a compiled network, lazily built solvers, imports)."""
    if len(online.users):
        online.recommend(online.users[0], 10)
    online.recommend("__warm_up__", 10)
    if online.model.folds_in and online.n_items:
        online.recommend("__warm_up__", 10, recent=[online.items[0]])
