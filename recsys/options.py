"""One schema for the options of a training run: the CLI and the DAG check them alike.

Every option ``recsys train`` / ``recsys benchmark`` take as a flag and the
``recsys_training`` DAG takes as a param has one :class:`Rule` here. The rule
is applied before any work starts (no data read, no MLflow run opened, no run
folder made):

- the CLI calls :func:`check_options` with ``surface="cli"``, so an error
  names the flag (``--rerank-strength must lie in [0, 1], got 5.0``);
- the DAG's first task calls :func:`check_dag_params`, so an error names the
  param (``param rerank_strength must lie in [0, 1], got 5``), and the DAG
  builds each ``Param``'s JSON schema from :func:`param_schema`, so the trigger
  form refuses the same values before a run is even created;
- :class:`recsys.pipeline.PipelineOptions` checks its own fields with the same
  rules, so a caller of the library cannot get past them either.

This module imports nothing heavy (a DAG file imports it at parse time).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from recsys.errors import InputError
from recsys.models import available_models

Surface = Literal["cli", "param", "field"]

#: Split protocols a training run offers (see :func:`recsys.data.splits.split_interactions`).
TRAIN_PROTOCOLS = ("temporal", "msr", "loo", "stratified", "random")
#: Split protocols ``recsys benchmark`` offers.
BENCHMARK_PROTOCOLS = ("msr", "temporal", "loo")
#: Data formats by name (``auto``: detected from the path).
DATA_FORMATS = ("auto", "ml-100k", "ml-latest", "ml-1m", "recsys", "csv", "tsv", "parquet")
#: The longest list a run writes (and the largest K of its metrics).
MAX_K = 200
#: A registered model name: it ends up in ``models:/NAME@alias`` URIs and folder names.
#: (Empty matches too: an optional field left blank in the trigger form means the default.)
NAME_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$"
#: A run key given by hand: a plain folder name under ``$RECSYS_HOME/runs``.
RUN_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"


@dataclass(frozen=True)
class Rule:
    """What one option may hold.

    Attributes:
        name: the DAG param and :class:`~recsys.pipeline.PipelineOptions` field.
        flag: the CLI flag (``None``: the CLI does not offer it).
        kind: ``integer``, ``number`` (finite), ``string``, ``choice`` or
            ``models`` (a non-empty list of registered model names, no repeats).
        minimum / maximum: inclusive bounds of a number.
        choices: the values a ``choice`` may take.
        pattern: a regular expression a ``string`` must match.
        nullable: ``None`` is allowed (the option then takes its default).
        hint: how to fix a wrong value, appended to the message.
    """

    name: str
    flag: str | None
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    nullable: bool = False
    hint: str = ""

    def label(self, surface: Surface) -> str:
        """How an error names this option on ``surface``."""
        if surface == "cli" and self.flag:
            return self.flag
        return f"param {self.name}" if surface == "param" else self.name

    def check(self, value: Any, surface: Surface = "field") -> Any:
        """``value`` when it obeys the rule (lists as tuples, numbers as Python numbers).

        Raises:
            InputError: it does not; the message names the option as ``surface`` does.
        """
        if self.nullable and (value is None or value == ""):
            return None  # the option's default (a trigger form sends an empty field as "")
        checker = getattr(self, f"_check_{self.kind}")
        return checker(value, self.label(surface))

    def _fail(self, label: str, what: str, value: Any) -> InputError:
        hint = f"; {self.hint}" if self.hint else ""
        return InputError(f"{label} {what}, got {value!r}{hint}")

    def _bounds(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"must lie in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"must be at least {self.minimum:g}"
        return f"must be at most {self.maximum:g}"

    def _in_bounds(self, value: float) -> bool:
        low = self.minimum is None or value >= self.minimum
        return low and (self.maximum is None or value <= self.maximum)

    def _check_integer(self, value: Any, label: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self._fail(label, "must be a whole number", value)
        if not self._in_bounds(int(value)):
            raise self._fail(label, self._bounds(), value)
        return int(value)

    def _check_number(self, value: Any, label: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._fail(label, "must be a number", value)
        if not math.isfinite(float(value)):
            raise self._fail(label, "must be a finite number", value)
        if not self._in_bounds(float(value)):
            raise self._fail(label, self._bounds(), value)
        return float(value)

    def _check_string(self, value: Any, label: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self._fail(label, "must be a non-empty text", value)
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise self._fail(label, "is not a valid name", value)
        return value

    def _check_path(self, value: Any, label: str) -> str:
        self._check_string(value, label)
        if not Path(value).expanduser().exists():
            raise self._fail(label, "names no file or folder", value)
        return value

    def _check_choice(self, value: Any, label: str) -> str:
        if value not in self.choices:
            raise self._fail(label, f"must be one of {', '.join(self.choices)}", value)
        return value

    def _check_models(self, value: Any, label: str) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise self._fail(label, "must be a list of model names", value)
        names = list(value)
        if not names:
            raise self._fail(label, "must name at least one model", value)
        known = available_models()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise self._fail(
                label,
                f"names unknown model{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))} "
                f"(available: {', '.join(known)})",
                value,
            )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise self._fail(label, f"names {', '.join(repeated)} more than once", value)
        return tuple(names)

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema keywords of an Airflow ``Param`` that enforce this rule."""
        kind = {"integer": "integer", "number": "number"}.get(self.kind, "string")
        schema: dict[str, Any] = {}
        if self.kind == "choice":
            schema["enum"] = list(self.choices)
        elif self.kind == "models":
            known = available_models()
            schema.update(
                type="array",
                items={"type": "string", "enum": known},
                examples=known,
                minItems=1,
                uniqueItems=True,
            )
        else:
            schema["type"] = ["null", kind] if self.nullable else kind
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.pattern:
            schema["pattern"] = self.pattern
        return schema


_RULES = (
    Rule("data_path", "path", "path", nullable=True),
    Rule("data_format", "--format", "choice", choices=DATA_FORMATS),
    Rule("models", "--models", "models"),
    Rule("protocol", "--protocol", "choice", choices=TRAIN_PROTOCOLS),
    Rule("k", "--k", "integer", minimum=1, maximum=MAX_K),
    Rule("margin", "--margin", "number", minimum=0.0),
    Rule(
        "rerank_strength",
        "--rerank-strength",
        "number",
        minimum=0.0,
        maximum=1.0,
        hint="0 keeps the champion's order, 1 is the strongest popularity discount",
    ),
    Rule("min_new_interactions", None, "integer", minimum=0),
    Rule("tuning_trials", None, "integer", minimum=0),
    Rule("tuning_timeout_s", None, "integer", minimum=1),
    Rule("max_sequence_length", None, "integer", minimum=1),
    Rule(
        "model_name",
        "--model-name",
        "string",
        pattern=NAME_PATTERN,
        nullable=True,
        hint="letters, digits and -_. only, starting with a letter or digit, at most 100",
    ),
    Rule(
        "run_key",
        "--run-key",
        "string",
        pattern=RUN_KEY_PATTERN,
        nullable=True,
        hint="a plain folder name: letters, digits and -_., starting with a letter or digit",
    ),
    # recsys benchmark's own
    Rule("rerank", "--rerank", "choice", choices=tuple(available_models()), nullable=True),
    Rule("rerank_lam", "--rerank-lams", "number", minimum=0.0, maximum=1.0),
    Rule("rerank_pool", "--rerank-pool", "integer", minimum=1, maximum=10_000),
)
RULES: dict[str, Rule] = {rule.name: rule for rule in _RULES}

#: The recsys_training DAG's params, each checked by the rule of the same name.
DAG_PARAMS = (
    "data_path",
    "data_format",
    "models",
    "protocol",
    "k",
    "min_new_interactions",
    "margin",
    "tuning_trials",
    "rerank_strength",
    "tuning_timeout_s",
    "max_sequence_length",
    "model_name",
)


def param_schema(name: str) -> dict[str, Any]:
    """JSON-schema keywords for the DAG param ``name`` (spread into ``Param(...)``)."""
    return RULES[name].json_schema()


def check_options(
    values: Mapping[str, Any],
    surface: Surface = "field",
    *,
    protocols: Sequence[str] = (),
    flags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Every option in ``values`` checked by its rule; the checked values.

    Args:
        values: option name → value (names as in :data:`RULES`).
        surface: how errors name an option: ``cli`` (its flag), ``param``
            (``param <name>``) or ``field`` (its name).
        protocols: the protocols this caller offers, when fewer than a
            training run's (``recsys benchmark``).
        flags: option name → the flag this command gives it, where it differs
            from the rule's (``recsys benchmark --data`` for ``data_path``).

    Raises:
        InputError: the first option that breaks its rule, or a name with no rule.
    """
    out = {}
    for name, value in values.items():
        rule = RULES.get(name)
        if rule is None:
            raise InputError(f"no such option {name!r}; options are: {', '.join(RULES)}")
        if name == "protocol" and protocols:
            rule = replace(rule, choices=tuple(protocols))
        if flags and name in flags:
            rule = replace(rule, flag=flags[name])
        out[name] = rule.check(value, surface)
    return out


def check_dag_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The recsys_training DAG's params, checked; what its first task calls.

    A param the DAG does not declare (a typo in the trigger's JSON such as
    ``model`` for ``models``) is an error, not silently ignored.

    Raises:
        InputError: a param breaks its rule, is missing, or is unknown; the
            message names the param.
    """
    unknown = sorted(set(params) - set(DAG_PARAMS))
    if unknown:
        raise InputError(
            f"unknown param(s) {', '.join(unknown)}; recsys_training takes: {', '.join(DAG_PARAMS)}"
        )
    missing = [name for name in DAG_PARAMS if name not in params]
    if missing:
        raise InputError(f"param(s) {', '.join(missing)} missing from the run's params")
    return check_options({name: params[name] for name in DAG_PARAMS}, "param")


def split_list(raw: str | None) -> list[str]:
    """A comma-separated flag value as its items (blanks dropped): ``"a, b,"`` → ``["a", "b"]``."""
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def parse_numbers(raw: str, flag: str) -> list[float]:
    """A comma-separated list of numbers typed after ``flag``.

    Raises:
        InputError: an item is not a number; the message names ``flag``.
    """
    out = []
    for part in split_list(raw):
        try:
            out.append(float(part))
        except ValueError:
            raise InputError(f"{flag} must be comma-separated numbers, got {part!r}") from None
    if not out:
        raise InputError(f"{flag} must name at least one value, got {raw!r}")
    return out
