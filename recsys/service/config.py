"""The service's settings: command-line flags over environment variables over defaults.

| variable | default | meaning |
|---|---|---|
| ``RECSYS_SERVE_HOST`` | ``127.0.0.1`` | address to listen on (``0.0.0.0`` in a container) |
| ``RECSYS_SERVE_PORT`` | ``8000`` | port |
| ``RECSYS_SERVE_WORKERS`` | ``1`` | server processes (each holds its own copy of the models) |
| ``RECSYS_SERVE_POLL_SECONDS`` | ``5`` | how often the aliases are read (a cheap query) |
| ``RECSYS_SERVE_MAX_K`` | ``100`` | the longest list a request may ask for |
| ``RECSYS_SERVE_MAX_BATCH`` | ``16`` | the most requests scored by the model in one call |
| ``RECSYS_SERVE_ACCESS_LOG`` | ``1`` | one log line per request (``0`` = off) |
| ``RECSYS_AB_CHALLENGER_SHARE`` | ``0`` | share of users (0..1) served by ``challenger`` |
| ``RECSYS_AB_SALT`` | ``recsys-ab`` | salt of the stable hash that buckets users |

The Redis URL and key prefix (``RECSYS_REDIS_URL``, ``RECSYS_CACHE_PREFIX``) and
the pseudonym key are the deployment's, shared with the pipeline
(:mod:`recsys.config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recsys import config
from recsys.errors import InputError


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service reads at start.

    Attributes:
        model_name: the registered model served; ``None`` = the deployment's
            (:func:`recsys.registry.snapshot.default_model`).
        host: listen address.
        port: listen port.
        workers: server processes.
        redis_url: the batch cache; ``None`` = no cache (every answer from the model).
        cache_prefix: first part of the cache keys.
        poll_s: seconds between reads of the aliases.
        max_k: the longest list a request may ask for.
        max_batch: the most requests that waited together scored in one model call.
        default_k: list length when a request does not say.
        challenger_share: share of users served by the ``challenger`` alias.
        ab_salt: salt of the bucketing hash (change it to reshuffle buckets).
        access_log: log one line per request.
        pseudonym_key: ``RECSYS_PSEUDONYM_KEY`` (user ids are mapped with it and
            never logged in clear).
        serving_root: where the local copies of the versions live.
    """

    model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    redis_url: str | None = None
    cache_prefix: str = "recsys"
    poll_s: float = 5.0
    max_k: int = 100
    max_batch: int = 16
    default_k: int = 10
    challenger_share: float = 0.0
    ab_salt: str = "recsys-ab"
    access_log: bool = True
    pseudonym_key: bytes | None = field(default=None, repr=False)
    serving_root: Path | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """Settings from the environment; ``overrides`` that are not ``None`` win.

        Raises:
            InputError: a value that cannot be used (the message names the variable).
        """
        env = os.environ
        settings = cls(
            model_name=env.get("RECSYS_SERVE_MODEL") or None,
            host=env.get("RECSYS_SERVE_HOST", cls.host),
            port=_number(env, "RECSYS_SERVE_PORT", cls.port, int),
            workers=_number(env, "RECSYS_SERVE_WORKERS", cls.workers, int),
            redis_url=config.redis_url(),
            cache_prefix=config.cache_prefix(),
            poll_s=_number(env, "RECSYS_SERVE_POLL_SECONDS", cls.poll_s, float),
            max_k=_number(env, "RECSYS_SERVE_MAX_K", cls.max_k, int),
            max_batch=_number(env, "RECSYS_SERVE_MAX_BATCH", cls.max_batch, int),
            challenger_share=_number(env, "RECSYS_AB_CHALLENGER_SHARE", 0.0, float),
            ab_salt=env.get("RECSYS_AB_SALT", cls.ab_salt),
            access_log=env.get("RECSYS_SERVE_ACCESS_LOG", "1").strip().lower()
            not in ("0", "false", "no", "off"),
            pseudonym_key=config.pseudonym_key(),
        )
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        return settings.checked()

    def checked(self) -> ServiceConfig:
        """These settings, when they can be used.

        Raises:
            InputError: a share outside [0, 1], a non-positive poll interval,
                ``max_k`` or worker count, a port out of range.
        """
        if not 0.0 <= self.challenger_share <= 1.0:
            raise InputError(
                f"the challenger share must lie in [0, 1], got {self.challenger_share} "
                "(RECSYS_AB_CHALLENGER_SHARE or --challenger-share)"
            )
        if self.poll_s <= 0:
            raise InputError(f"the poll interval must be positive, got {self.poll_s}")
        if self.max_k < 1 or self.workers < 1:
            raise InputError("max_k and workers must be at least 1")
        if self.max_batch < 1:
            raise InputError(
                f"the batch size must be at least 1, got {self.max_batch} "
                "(RECSYS_SERVE_MAX_BATCH or --max-batch)"
            )
        if not 0 < self.port < 65536:
            raise InputError(f"port must lie in 1..65535, got {self.port}")
        return self


def _number(env: os._Environ, name: str, default: float, kind: type) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise InputError(
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
