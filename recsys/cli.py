"""The ``recsys`` command: the pipeline without Airflow.

Sub-commands: ``generate``, ``validate``, ``train``, ``benchmark``,
``recommend``, ``serve`` (the HTTP service), ``status``, ``rollback``, ``promote``
(a manual override), ``forget`` (the right to erasure) and ``monitor`` (drift,
decay, retraining).
Exit status: 0 done, 1 the data failed validation or there is nothing to show,
2 a problem the user can fix (bad data, a wrong path, an unknown model; the
message says what to change), 3 an unexpected error (a bug: ``-v`` shows the
traceback). A traceback is never the answer to a user's mistake.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError
from recsys.options import BENCHMARK_PROTOCOLS, DATA_FORMATS, TRAIN_PROTOCOLS

log = logging.getLogger("recsys")

FORMATS = ", ".join(f for f in DATA_FORMATS if f != "auto")


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with its default (unless it has none, or the help says
    it in words); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        dest="data_format",
        default=None,
        help=f"the data's format ({FORMATS}); detected from the path when not given",
    )
    p.add_argument("--user-col", help="user id column of a delimited or Parquet file")
    p.add_argument("--item-col", help="item id column of a delimited or Parquet file")
    p.add_argument("--rating-col", help="rating (or count) column; without one every row counts 1")
    p.add_argument("--time-col", help="timestamp column (seconds or dates); optional")
    p.add_argument("--sep", help="field separator of a delimited file (',' for .csv, tab for .tsv)")


def _columns(args: argparse.Namespace) -> dict[str, str]:
    names = ("user_col", "item_col", "rating_col", "time_col", "sep")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _parser() -> argparse.ArgumentParser:
    from recsys.models import DEFAULT_MODELS, available_models

    parser = argparse.ArgumentParser(
        prog="recsys", description=__doc__.split("\n\n")[0], formatter_class=_Help
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step's details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=kw.pop("description", help), formatter_class=_Help, **kw
        )

    p = command("generate", "write a synthetic data set (users, items, interactions)")
    p.add_argument("--users", type=int, default=1000, help="number of users")
    p.add_argument("--items", type=int, default=500, help="number of items")
    p.add_argument("--interactions", type=int, default=50_000, help="number of interactions")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", required=True, help="output folder (recsys format)")

    p = command("validate", "check data against the expectation suites")
    p.add_argument("path", help="a data file or folder")
    p.add_argument("--docs", help="write Great Expectations Data Docs to this folder")
    _add_data_options(p)

    p = command(
        "train",
        "run the whole pipeline in-process (the same steps as the DAG)",
        description="Validate, split, build features, train every model, evaluate them and "
        "the champion on one holdout, promote through the gate, write the champion's "
        "lists.\nPrints what it does as it goes and a short summary at the end.",
    )
    p.add_argument("path", help="a data file or folder")
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated model names, of: {', '.join(available_models())}",
    )
    p.add_argument(
        "--protocol",
        default="temporal",
        choices=TRAIN_PROTOCOLS,
        help="how the test set is held out (data without timestamps falls back to random)",
    )
    p.add_argument("--k", type=int, default=10, help="list length, and the K of the metrics")
    p.add_argument(
        "--margin", type=float, default=0.0, help="NDCG@K gain needed to replace the champion"
    )
    p.add_argument(
        "--rerank-strength",
        type=float,
        default=0.0,
        help="re-rank the written lists against popularity, 0 (off) to 1",
    )
    p.add_argument(
        "--model-name",
        default=None,
        help="registered model to train into (default: the data's own: recsys for "
        "$RECSYS_DATA_PATH, recsys-<name> for other data)",
    )
    p.add_argument("--run-key", default=None, help="run folder name (default: cli-<time>)")
    p.add_argument("--json", action="store_true", help="print the whole summary as JSON")
    _add_data_options(p)

    p = command("benchmark", "train and evaluate models on one split of the data")
    p.add_argument("--data", required=True, help="a data file or folder")
    p.add_argument("--protocol", default="msr", choices=BENCHMARK_PROTOCOLS, help="split protocol")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model names")
    p.add_argument("--k", type=int, default=10, help="list length, and the K of the metrics")
    p.add_argument("--output", help="write the JSON report here")
    p.add_argument(
        "--rerank", metavar="MODEL", default=None, help="also report this model's re-ranking"
    )
    p.add_argument(
        "--rerank-method",
        default="discount",
        choices=["discount", "popularity", "mmr"],
        help="discount: score / (1 + popularity)^lam; popularity: additive penalty; "
        "mmr: genre diversity",
    )
    p.add_argument(
        "--rerank-lams", default=None, help="comma-separated knob values in [0, 1] (a grid)"
    )
    p.add_argument("--rerank-pool", type=int, default=100, help="candidates re-ranked per user")
    p.add_argument("--rerank-plot", default=None, help="write the trade-off plot (PNG) here")
    p.add_argument("--no-cold-users", action="store_true", help="skip the cold-user section")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of every model that takes one (default: each model's own)",
    )
    _add_data_options(p)

    p = command("rollback", "move champion back to previous_champion")
    p.add_argument("--reason", default="manual rollback", help="why (recorded)")
    _add_model_option(p)

    p = command("promote", "make a registered version the champion by hand")
    p.add_argument("--version", type=int, required=True, help="the version to promote")
    p.add_argument("--reason", required=True, help="why (recorded in the decision)")
    _add_model_option(p)

    p = command(
        "recommend",
        "top-K for a user from the registry's champion",
        description="A user the champion does not know is served by the cold-start "
        "chain; the onboarding options steer it.",
    )
    p.add_argument("--user", required=True, help="the user's id, as in the data")
    p.add_argument("--k", type=int, default=10, help="list length")
    p.add_argument(
        "--liked-items", default=None, metavar="ID,ID", help="items a new user says they like"
    )
    p.add_argument(
        "--liked-genres",
        default=None,
        metavar="GENRE,GENRE",
        help="genres a new user says they like",
    )
    p.add_argument("--age", type=int, default=None, help="a new user's age (segment)")
    p.add_argument("--gender", default=None, help="a new user's gender (segment)")
    p.add_argument("--occupation", default=None, help="a new user's occupation (segment)")
    p.add_argument("--json", action="store_true", help="print the list as JSON records")
    _add_model_option(p)

    p = command(
        "serve",
        "answer recommendations over HTTP from the champion (and the challenger)",
        description="GET /recommendations/{user_id}, POST /recommendations (recent items "
        "folded in), GET /similar/{item_id}, /health, /ready, /metrics. Follows the "
        "champion alias and reloads without dropping requests. Flags override the "
        "RECSYS_SERVE_* variables.",
    )
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8000)")
    p.add_argument("--workers", type=int, default=None, help="server processes (default 1)")
    p.add_argument(
        "--redis-url",
        default=None,
        help="the batch cache (default $RECSYS_REDIS_URL; none: every answer from the model)",
    )
    p.add_argument(
        "--challenger-share",
        type=float,
        default=None,
        help="share of users (0..1) served by the challenger alias (default 0)",
    )
    p.add_argument(
        "--poll-seconds", type=float, default=None, help="how often the aliases are read (5)"
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most requests that queued together scored in one model call (default 16)",
    )
    p.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (default: one)"
    )
    _add_model_option(p)

    p = command("status", "the champion, its metrics, the other registered models")
    _add_model_option(p)
    _add_privacy_commands(command)
    _add_ingest_command(command)
    return parser


def _add_privacy_commands(command: Any) -> None:
    p = command(
        "forget",
        "erase a user: store, demographics, run folders, serving cache; audit it",
        description="The right to erasure. The champion answers the user through the "
        "cold-start path from the next request on; the next training run leaves them out.",
    )
    p.add_argument("--user", required=True, help="the user's id, as in the data")
    p.add_argument("--reason", default=None, help="why (recorded; the id is redacted there)")
    p.add_argument("--data", default=None, help="the interaction store (default $RECSYS_DATA_PATH)")
    p.add_argument("--json", action="store_true", help="print the audit entry as JSON")

    p = command(
        "monitor",
        "measure drift and decay of new batches; decide whether to retrain",
        description="What the recsys_monitor DAG does: each batch of the store the champion "
        "has not seen is measured against its training data, then the retraining policy "
        "decides (thresholds: RECSYS_MONITOR_* variables).",
    )
    p.add_argument("--data", default=None, help="the interaction store (default $RECSYS_DATA_PATH)")
    p.add_argument("--k", type=int, default=10, help="the K of the prequential hit rate and NDCG")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_model_option(p)


def _add_model_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="registered model (default: recsys, or the model trained most recently when "
        "recsys has no champion; `recsys status` lists them)",
    )


def _typed_id(raw: str) -> int | str:
    """Interpret an id typed on the command line (ints stay ints)."""
    try:
        return int(raw)
    except ValueError:
        return raw


# --------------------------------------------------------------------- commands
def cmd_generate(args: argparse.Namespace) -> int:
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset

    start = time.perf_counter()
    ds = generate_dataset(args.users, args.items, args.interactions, seed=args.seed)
    out = write_dataset(ds, args.out)
    print(
        f"wrote {len(ds.interactions):,} interactions, {args.users:,} users, "
        f"{args.items:,} items to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from recsys.data import validation
    from recsys.data.loaders import DataFormatError, load_input

    try:
        dataset = load_input(args.path, args.data_format, _columns(args))
    except (DataFormatError, FileNotFoundError) as exc:
        print(f"{args.path}: cannot be read: {exc}", file=sys.stderr)
        return 1
    report = validation.validate_dataset(
        dataset, now=time.time(), docs_dir=Path(args.docs) if args.docs else None
    )
    if report.success:
        print(f"{args.path}: all expectations passed ({len(dataset.interactions):,} interactions)")
        return 0
    print(report.summary(), file=sys.stderr)
    return 1


def cmd_train(args: argparse.Namespace) -> int:
    from recsys import options as opts

    # Every flag against the one schema the DAG's params obey, before any work.
    checked = opts.check_options(
        {
            "data_path": args.path,
            "data_format": args.data_format or "auto",
            "models": opts.split_list(args.models),
            "protocol": args.protocol,
            "k": args.k,
            "margin": args.margin,
            "rerank_strength": args.rerank_strength,
            "model_name": args.model_name,
            "run_key": args.run_key,
        },
        "cli",
    )
    from recsys.pipeline import PipelineOptions, run_pipeline

    options = PipelineOptions(
        data_path=args.path,
        data_format=None if checked["data_format"] == "auto" else checked["data_format"],
        columns=_columns(args),
        models=checked["models"],
        protocol=args.protocol,
        k=checked["k"],
        margin=checked["margin"],
        rerank_strength=checked["rerank_strength"],
        model_name=args.model_name,
    )
    run_key = args.run_key or time.strftime("cli-%Y%m%dT%H%M%S")
    summary = run_pipeline(options, run_key, now=time.time())
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(train_summary(summary))
    return 0


def train_summary(summary: dict) -> str:
    """What a person wants after ``recsys train``: models, winner, decision, outputs, next."""
    from recsys.pipeline import RunFolder

    validation, split = summary["validation"], summary["split"]
    decision, recs = summary["decision"], summary["recommendations"]
    name = validation["registered_model"]
    k = next((m.split("@")[1] for m in summary["leaderboard"][0] if m.startswith("ndcg@")), "10")
    lines = [
        f"trained {len(summary['leaderboard'])} models on {validation['data_path']} "
        f"({validation['rows']:,} interactions, {validation['users']:,} users, "
        f"{validation['items']:,} items); split: {split['protocol']}",
    ]
    lines += [f"  note: {note}" for note in split.get("notes", [])]
    columns = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", "coverage", "train_seconds"]
    lines.append("  " + f"{'model':<12}" + "".join(f"{c:>14}" for c in columns))
    for entry in summary["leaderboard"]:
        row = {**entry, **(entry.get("served") or {})}  # every test user, as served
        cells = "".join(
            f"{row.get(c, float('nan')):>14.{1 if c == 'train_seconds' else 4}f}" for c in columns
        )
        lines.append(f"  {row['model']:<12}{cells}")
    verdict = "promoted" if decision["promote"] else "held"
    why = decision["reason"].split(": ", 1)[-1]
    lines.append(
        f"decision: {verdict}: {why}\n"
        f"registered model: {name} (champion: version "
        f"{recs['model_version']}; this run's candidate: version {decision['candidate_version']})"
    )
    run = RunFolder(summary["run_key"])
    lines.append(f"recommendations: {recs['path']} ({recs['users']:,} users)")
    lines.append(f"run folder: {run.path}")
    model_flag = "" if name == _default_model() else f" --model {name}"
    lines.append(
        f"next: recsys recommend{model_flag} --user <id>   ·   recsys status{model_flag}"
        "   ·   make ui (the Recommender page)"
    )
    return "\n".join(lines)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from recsys import options as opts

    checked = opts.check_options(
        {
            "data_path": args.data,
            "data_format": args.data_format or "auto",
            "models": opts.split_list(args.models),
            "protocol": args.protocol,
            "k": args.k,
            "rerank": args.rerank,
            "rerank_pool": args.rerank_pool,
        },
        "cli",
        protocols=opts.BENCHMARK_PROTOCOLS,
        flags={"data_path": "--data"},
    )
    lams = None
    if args.rerank_lams is not None:
        lams = tuple(
            opts.check_options({"rerank_lam": lam}, "cli")["rerank_lam"]
            for lam in opts.parse_numbers(args.rerank_lams, "--rerank-lams")
        )
    from recsys.pipeline.benchmark import (
        format_rerank_table,
        format_table,
        plot_rerank_tradeoff,
        run_benchmark,
        seeded_params,
    )

    rerank = None
    if args.rerank:
        rerank = {
            "model": args.rerank,
            "method": args.rerank_method,
            "lams": lams,
            "pool": checked["rerank_pool"],
        }
    report = run_benchmark(
        args.data,
        protocol=args.protocol,
        models=list(checked["models"]),
        k=checked["k"],
        data_format=None if checked["data_format"] == "auto" else checked["data_format"],
        columns=_columns(args),
        rerank=rerank,
        cold_users=not args.no_cold_users,
        model_params=seeded_params(checked["models"], args.seed),
    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
    print(format_table(report, args.k))
    if rerank:
        print()
        print(format_rerank_table(report, args.k))
        if args.rerank_plot:
            print(f"plot: {plot_rerank_tradeoff(report, args.rerank_plot, args.k)}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from recsys import registry

    registry.check_store()
    decision = registry.rollback(_default_model(args.model), reason=args.reason)
    print(
        f"champion is version {decision.candidate_version} again "
        f"(version {decision.champion_version} is previous_champion): {decision.reason}"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from recsys import registry

    registry.check_store()
    decision = registry.promote_manually(args.version, args.reason, _default_model(args.model))
    print(f"champion is version {decision.candidate_version}: {decision.reason}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys import config, registry
    from recsys.data.prepare import pseudonymise_ids
    from recsys.errors import check_k
    from recsys.registry.snapshot import current_copy

    k = check_k(args.k, "--k")
    registry.check_store()  # a missing store is not created, a dead server not retried
    name = _default_model(args.model)
    snapshot, copy = current_copy(name)
    key = config.pseudonym_key()
    user = _typed_id(args.user)
    asked = pseudonymise_ids([user], key)[0] if key else user
    recs = _answer(snapshot, copy, asked, _answers(args), k).assign(user_id=args.user)
    titles = snapshot.titles(copy)
    if titles:
        recs.insert(2, "title", recs["item_id"].map(titles).fillna(""))
    if args.json:
        print(recs.to_json(orient="records"))
        return 0
    print(f"{name} version {copy.version} ({copy.model_type}) for user {args.user}:")
    print(recs.drop(columns=["user_id"]).to_string(index=False))
    return 0


def _answer(snapshot: Any, copy: Any, user: Any, answers: dict, k: int) -> Any:
    """The cheapest correct answer: the champion's batch list when it holds the user
    (``served_by`` = ``batch``), the cold-start chain for a user the batch never saw,
    the model itself only when neither can answer (e.g. ``k`` beyond the batch's) or
    the user was forgotten (the served model answers them as a stranger, without the
    demographics the chain would look up under their id)."""
    import pandas as pd

    from recsys.constants import RANK_COL, SERVED_BY_COL, USER_COL
    from recsys.data.forgotten import default_list

    lists = None if default_list().mask([user])[0] else snapshot.batch_lists(copy)
    if lists is not None:
        mine = lists[lists[USER_COL].astype(str) == str(user)]
        if len(mine) >= k:
            top = mine.nsmallest(k, RANK_COL).drop(columns=["model_version"], errors="ignore")
            return top.assign(**{SERVED_BY_COL: "batch"}).reset_index(drop=True)
        if mine.empty:
            request = pd.DataFrame({USER_COL: [user], **{c: [v] for c, v in answers.items()}})
            return snapshot.cold_start(copy).recommend_many(request, k)
    request = pd.DataFrame({USER_COL: [user], **{c: [v] for c, v in answers.items()}})
    return snapshot.served(copy).recommend(request, k)


def _answers(args: argparse.Namespace) -> dict[str, Any]:
    """The onboarding answer typed on the command line, as the served model reads it."""
    answers: dict[str, Any] = {
        "age": args.age,
        "gender": args.gender,
        "occupation": args.occupation,
    }
    for column, raw in (("liked_items", args.liked_items), ("liked_genres", args.liked_genres)):
        if raw:
            values = [v.strip() for v in raw.split(",") if v.strip()]
            answers[column] = [_typed_id(v) for v in values] if column == "liked_items" else values
    return {c: v for c, v in answers.items() if v is not None}


def cmd_serve(args: argparse.Namespace) -> int:
    from recsys.service.app import serve
    from recsys.service.config import ServiceConfig

    settings = ServiceConfig.from_env(
        model_name=_default_model(args.model),
        host=args.host,
        port=args.port,
        workers=args.workers,
        redis_url=args.redis_url,
        challenger_share=args.challenger_share,
        poll_s=args.poll_seconds,
        max_batch=args.max_batch,
        access_log=False if args.no_access_log else None,
    )
    print(
        f"serving {settings.model_name} on http://{settings.host}:{settings.port} "
        f"(cache: {'on' if settings.redis_url else 'off'}; Ctrl-C stops)",
        flush=True,
    )
    serve(settings)
    return 0


#: Besides the ranking metrics at K, what `recsys status` shows of the champion.
HEADLINE_METRICS = ("coverage", "novelty", "diversity", "train_seconds")


def cmd_status(args: argparse.Namespace) -> int:
    from recsys import config, registry
    from recsys.pipeline import RunFolder

    registry.check_store()
    name = _default_model(args.model)
    others = [m for m in registry.list_registered_models() if m["name"] != name]
    champion = registry.get_champion(name)
    if champion is None:
        print(f"no champion yet for model '{name}'; run `recsys train` or the recsys_training DAG")
        _print_others(others)
        return 1
    print(f"champion: {name} version {champion['version']} ({champion.get('model_type')})")
    metrics = champion.get("metrics", {})
    headline = {
        n: v
        for n, v in sorted(metrics.items())
        if n in HEADLINE_METRICS or ("@" in n and "." not in n)
    }
    width = max(map(len, headline), default=0)
    for metric, value in headline.items():
        print(f"  {metric:>{width}}: {value:.4f}")
    if len(metrics) > len(headline):
        print(f"  (+{len(metrics) - len(headline)} more, slices included, in the MLflow run)")
    runs = sorted(
        (
            p
            for p in config.runs_root().glob("*/recommendations.parquet")
            if RunFolder(p.parent.name).registered_model() == name
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if runs:
        print(f"latest recommendations: {runs[-1]}")
    _print_others(others)
    print("the Recommender page and MLflow UI: make ui")
    return 0


def _print_others(others: list[dict]) -> None:
    if others:
        listed = ", ".join(
            f"{m['name']} (champion v{m['champion_version']})"
            if m["champion_version"]
            else m["name"]
            for m in others
        )
        print(f"other registered models: {listed}; pick one with --model NAME")


def _default_model(given: str | None = None) -> str:
    """``--model`` when given, else :func:`recsys.registry.snapshot.default_model`."""
    from recsys.registry.snapshot import default_model

    return given or default_model()


def cmd_forget(args: argparse.Namespace) -> int:
    from recsys.pipeline.privacy import AUDIT_FILE, forget_user

    entry = forget_user(_typed_id(args.user), reason=args.reason, data_path=args.data)
    if args.json:
        print(json.dumps(entry, indent=2))
        return 0
    print(forget_summary(args.user, entry))
    from recsys import config

    print(f"audit: {config.privacy_dir() / AUDIT_FILE}")
    return 0


def forget_summary(user: str, entry: dict) -> str:
    """Counts before and after, per place, of one erasure."""
    counts = entry["counts"]
    lines = [f"forgot user {user} (recorded as subject {entry['subject']}):"]
    for key, label in (
        ("store", "interaction store"),
        ("demographics", "demographics"),
        ("recommendations", "batch recommendations"),
    ):
        c = counts[key]
        files = f"  ({c['files']} file(s) rewritten)" if c.get("files") else ""
        lines.append(
            f"  {label:<22} before {c['before']:>9,}  removed {c['removed']:>6,}  "
            f"after {c['after']:>9,}{files}"
        )
    other = counts["run_folders"]
    segments = other.get("cold_start_segments", 0)
    lines.append(
        f"  {'other run-folder copies':<22} removed {other['removed']:,} rows "
        f"({other['files']} file(s)); {segments} cold-start segment entr"
        f"{'y' if segments == 1 else 'ies'}"
    )
    landed = counts.get("landed_copies") or {}
    if landed:
        skipped = (
            f"; {landed['skipped']} file(s) not rewritable, see the log"
            if landed["skipped"]
            else ""
        )
        lines.append(
            f"  {'landed batch copies':<22} removed {landed['removed']:,} rows "
            f"({landed['files']} file(s){skipped})"
        )
    cache = counts.get("cache") or {}
    lines.append(
        f"  {'serving cache':<22} "
        + (
            f"{cache['deleted']} entr{'y' if cache['deleted'] == 1 else 'ies'} deleted"
            if cache.get("reachable")
            else "no cache reachable (RECSYS_REDIS_URL is not set): nothing to delete"
        )
    )
    lines.append(
        "the champion answers this user through the cold-start path from now on; "
        "the next training run leaves them out"
    )
    return "\n".join(lines)


def cmd_monitor(args: argparse.Namespace) -> int:
    from recsys.errors import check_k
    from recsys.pipeline.monitor import monitor

    result = monitor(
        data_path=args.data, model_name=args.model, now=time.time(), k=check_k(args.k, "--k")
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    version = result["champion_version"]
    print(
        f"{result['registered_model']}: measured {len(result['measured'])} new batch(es)"
        + (f" against champion version {version}" if version else " (no champion yet)")
    )
    for d in result["decisions"]:
        print(f"  {d['batch'] or '(no new batch)'}: {d['action']}: {d['reason']}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "validate": cmd_validate,
    "train": cmd_train,
    "benchmark": cmd_benchmark,
    "recommend": cmd_recommend,
    "serve": cmd_serve,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "promote": cmd_promote,
    "forget": cmd_forget,
    "monitor": cmd_monitor,
}


# ----------------------------------------------------------------------- ingest
def _add_ingest_command(command: Any) -> None:
    p = command(
        "ingest",
        "take the complete batches of the landing folder into the interaction store",
        description="What the recsys_ingest DAG's task does: each complete batch (a\n"
        "<name>.done or _SUCCESS marker, or unchanged for the settle window) is validated,\n"
        "checked against the store's ids and timestamps, de-duplicated by content and\n"
        "appended, or quarantined with the reason. Safe beside a running DAG.\n"
        "Exit 1 when a batch was rejected or refused. --replay takes a quarantined batch back.",
    )
    p.add_argument("--landing", default=None, help="the landing folder (default $RECSYS_LANDING)")
    p.add_argument("--data", default=None, help="the interaction store (default $RECSYS_DATA_PATH)")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=None,
        help="a batch without a marker is taken once unchanged this long "
        "(default $RECSYS_INGEST_SETTLE_SECONDS, else 10)",
    )
    p.add_argument(
        "--arrival", default=None, help="the store partition, YYYY-MM-DD (default: today, UTC)"
    )
    p.add_argument(
        "--replay",
        metavar="BATCH",
        default=None,
        help="take back a quarantined batch (its folder name in $RECSYS_HOME/quarantine)",
    )
    p.add_argument(
        "--drop-invalid",
        action="store_true",
        help="with --replay: drop the rows that break a rule (recorded) and take the rest",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_ingest(args: argparse.Namespace) -> int:
    from recsys.errors import InputError
    from recsys.pipeline.steps import ingest, replay_quarantined

    if args.drop_invalid and not args.replay:
        raise InputError("--drop-invalid only applies with --replay BATCH")
    if args.replay and (args.landing or args.settle_seconds is not None):
        raise InputError("--replay takes a quarantined batch: drop --landing and --settle-seconds")
    if args.settle_seconds is not None and not 0 <= args.settle_seconds < float("inf"):
        raise InputError(f"--settle-seconds must be seconds >= 0, got {args.settle_seconds}")
    arrival = _arrival(args.arrival)
    if args.replay:
        outcome = replay_quarantined(
            args.replay,
            arrival=arrival,
            now=time.time(),
            drop_invalid=args.drop_invalid,
            data_path=args.data,
        )
        print(json.dumps(outcome, indent=2) if args.json else replay_summary(outcome))
        return 0
    result = ingest(
        arrival=arrival,
        now=time.time(),
        settle_seconds=args.settle_seconds,
        landing=args.landing,
        data_path=args.data,
    )
    print(json.dumps(result, indent=2) if args.json else ingest_summary(result))
    return 1 if result["rejected"] or result["refused"] else 0


def _arrival(raw: str | None) -> str:
    import datetime as dt

    from recsys.errors import InputError

    if raw is None:
        return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    try:
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise InputError(f"--arrival must be a date YYYY-MM-DD, got {raw!r}") from None


def ingest_summary(result: dict) -> str:
    """One line per batch an ingest looked at, and what to do about the rejected ones."""
    seen = sum(len(result[k]) for k in ("accepted", "duplicates", "rejected", "refused"))
    seen += len(result["already_ingested"])
    lines = [
        f"ingest {result['landing']} -> {result['store']}: {result['new_rows']:,} new rows "
        f"from {seen} batch(es), {result['duplicate_rows']:,} duplicate rows dropped"
    ]
    for b in result["accepted"]:
        dup = b.get("duplicate_rows", 0)
        also = f" ({dup:,} already in the store, recorded)" if dup else ""
        lines.append(f"  accepted   {b['source']}: {b['rows']:,} new rows{also}")
    for b in result["duplicates"]:
        lines.append(
            f"  duplicate  {b['source']}: 0 new rows, all {b['rows_landed']:,} already stored "
            f"(batch {', '.join(b['duplicate_of'])}); recorded in the manifest"
        )
    for bid in result["already_ingested"]:
        lines.append(f"  seen       batch {bid}: these very bytes were ingested before")
    for b in result["rejected"]:
        lines.append(f"  rejected   {b['source']}: {b['reason'].splitlines()[-1].lstrip('- ')}")
        lines.append(f"             in {b['quarantine']}")
        lines.append(
            f"             its good rows: recsys ingest --replay {b['batch']} --drop-invalid"
        )
    for b in result["refused"]:
        lines.append(f"  refused    {b['source']}: {b['reason']}")
    for b in result["waiting"]:
        lines.append(f"  waiting    {b['source']}: {b['reason']}")
    if not seen and not result["waiting"]:
        lines.append("  nothing landed")
    return "\n".join(lines)


def replay_summary(outcome: dict) -> str:
    """What a replay of a quarantined batch took, and what it dropped."""
    dropped = outcome.get("dropped") or {}
    if outcome["status"] == "already_ingested":
        return f"batch {outcome['batch']} is in the store already; nothing replayed"
    lines = [
        f"replayed {outcome['replay_of']} ({outcome['source']}) into {outcome['store']}: "
        f"{outcome['rows']:,} new rows, {dropped.get('rows', 0):,} invalid rows dropped, "
        f"{outcome.get('duplicate_rows', 0):,} duplicate rows dropped"
    ]
    for why, entry in dropped.get("reasons", {}).items():
        lines.append(f"  {entry['rows']:>8,}  {why}")
    if dropped:
        lines.append(f"every dropped row: {dropped['listing']}; counts are in the manifest")
    return "\n".join(lines)


COMMANDS["ingest"] = cmd_ingest


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recsys`` console script."""
    args = _parser().parse_args(argv)
    _configure_logging(args)
    try:
        return COMMANDS[args.command](args)
    except (RecsysError, FileNotFoundError) as exc:
        # Problems a user can fix: bad data, wrong paths, unknown names, no champion.
        log.debug("details", exc_info=True)
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"recsys {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug; the user gets one line, -v the traceback
        log.debug("details", exc_info=True)
        print(
            f"recsys {args.command}: unexpected error: {type(exc).__name__}: {exc}\n"
            "this is a bug in recsys; run again with -v for the traceback and report it",
            file=sys.stderr,
        )
        return 3


class _ToStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (not when created)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _configure_logging(args: argparse.Namespace) -> None:
    """Verbose: everything. Otherwise warnings, plus each step's progress for ``train``."""
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    progress = logging.getLogger("recsys.progress")
    for handler in [h for h in progress.handlers if isinstance(h, _ToStderr)]:
        progress.removeHandler(handler)
    progress.propagate = True
    if not args.verbose and args.command in ("train", "benchmark"):
        handler = _ToStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    if not args.verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        for noisy in ("mlflow", "alembic", "great_expectations", "py.warnings"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        logging.captureWarnings(True)


if __name__ == "__main__":
    sys.exit(main())
