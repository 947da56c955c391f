"""Turning results into strict JSON: what run folders, XCom and MLflow records hold."""

from __future__ import annotations

import math


def json_safe(value: object) -> object:
    """``value`` as strict-JSON data, at any depth.

    Dict keys become strings, tuples lists, numpy scalars Python numbers, and
    NaN or infinite floats ``None`` (strict JSON and Airflow's XCom refuse them).
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # a numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
