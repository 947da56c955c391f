"""The errors recsys raises on purpose, and the one check every list length shares.

Everything recsys raises for a reason a user can act on derives from
:class:`RecsysError`, so a caller (the ``recsys`` command, a DAG task) can
tell "this input or state is wrong, here is why" from a bug:

- :class:`InputError`: an argument, file or table that cannot be used (also a
  ``ValueError``); most modules raise a subclass named for what they check.
- :class:`NotFoundError`: something named does not exist yet (no champion,
  no trained result for a run, an unknown version).
- :class:`StateError`: the call is fine but comes at the wrong time (a model
  used before it was fitted).
- :class:`UnavailableError`: an outside system recsys needs (the MLflow
  store) cannot be reached or is not what it should be.

None of these is worth retrying as it stands (the same input fails the same
way), so the DAGs fail such a task at once instead of spending its retries;
the few that may pass on a second try (a busy lock, a store that did not
answer) say so with ``retryable = True``.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Callable, Iterator
from typing import Any


class RecsysError(Exception):
    """Base of every error recsys raises on purpose; its message says what to do.

    Attributes:
        retryable: whether the same call may succeed when tried again (False
            for bad input or state, the default).
    """

    retryable: bool = False


class InputError(RecsysError, ValueError):
    """An argument, file or table that cannot be used as given."""


class NotFoundError(RecsysError, LookupError):
    """Something named (a champion, a run's result, a model version) does not exist."""


class StateError(RecsysError, RuntimeError):
    """A call made at the wrong time, e.g. recommending before ``fit``."""


class UnavailableError(RecsysError):
    """An outside system (the MLflow store) is missing, unreachable or not what it should be."""

    #: A server that did not answer may answer on the next try.
    retryable = True


def check_k(k: object, what: str = "k") -> int:
    """``k`` as an ``int`` when it is a positive whole number (a list length, a cut-off).

    Raises:
        InputError: ``k`` is a bool, not an integer, or below 1.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InputError(f"{what} must be a positive integer, got {k!r}")
    return int(k)


@contextlib.contextmanager
def failing_fast(permanent: type[Exception]) -> Iterator[None]:
    """Re-raise a :class:`RecsysError` that a retry cannot fix as ``permanent``.

    For orchestrators: the DAGs pass Airflow's ``AirflowFailException``, so a
    task fails at once on bad input or state instead of spending its retries
    (recsys itself never imports Airflow). An error with ``retryable = True``
    and any other exception pass unchanged, to be retried as usual.
    """
    try:
        yield
    except RecsysError as exc:
        if exc.retryable:
            raise
        raise permanent(f"{type(exc).__name__}: {exc}") from exc


def fail_fast_as(permanent: type[Exception]) -> Callable[[Callable], Callable]:
    """A decorator: the function runs under :func:`failing_fast` with ``permanent``
    (the DAGs' ``_fail_fast = fail_fast_as(AirflowFailException)``)."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with failing_fast(permanent):
                return fn(*args, **kwargs)

        return call

    return decorate
