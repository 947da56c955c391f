"""Turning results into strict JSON: what run folders, XCom and MLflow records hold."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def json_safe(value: object) -> object:
    """``value`` as strict-JSON data, at any depth.

    Mappings get string keys; tuples, lists, sets, numpy arrays and pandas
    indexes become lists; numpy scalars Python numbers; paths strings; NaN or
    infinite floats and pandas' missing values ``None`` (strict JSON and Airflow's
    XCom refuse them); anything else its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        return json_safe(value.tolist())  # a numpy array or scalar, a pandas Index
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if type(value).__name__ in _MISSING_TYPES:
        return None
    return str(value)


#: pandas' missing-value markers (``pd.NA``, ``pd.NaT``), recognised without importing pandas.
_MISSING_TYPES = frozenset({"NAType", "NaTType"})


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as strict JSON (:func:`json_safe`), indented and key-sorted."""
    path.write_text(json.dumps(json_safe(payload), indent=2, sort_keys=True))
    return path


def read_json(path: Path) -> Any:
    """The JSON document in ``path``."""
    return json.loads(Path(path).read_text())
