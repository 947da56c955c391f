"""The ``recsys`` command: the pipeline without Airflow.

Sub-commands: ``generate``, ``validate``, ``train``, ``benchmark``,
``recommend``, ``status``, ``rollback`` and ``promote`` (a manual override).
Errors a user can fix (bad data, a wrong path, an unknown model) are printed
as one readable message with exit status 1 or 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from recsys.errors import RecsysError

log = logging.getLogger("recsys")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        dest="data_format",
        default=None,
        help="name the format instead of detecting it "
        "(ml-100k, ml-latest, ml-1m, recsys, csv, tsv, parquet)",
    )
    p.add_argument("--user-col", help="user id column of a generic file")
    p.add_argument("--item-col", help="item id column of a generic file")
    p.add_argument("--rating-col", help="rating column (optional: implicit feedback)")
    p.add_argument("--time-col", help="timestamp column (optional)")
    p.add_argument("--sep", help="field separator of a CSV/TSV file")


def _columns(args: argparse.Namespace) -> dict[str, str]:
    names = ("user_col", "item_col", "rating_col", "time_col", "sep")
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _parser() -> argparse.ArgumentParser:
    from recsys.models import DEFAULT_MODELS

    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write a synthetic data set")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--interactions", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder")

    p = sub.add_parser("validate", help="check data against the expectation suites")
    p.add_argument("path")
    p.add_argument("--docs", help="write Great Expectations Data Docs to this folder")
    _add_data_options(p)

    p = sub.add_parser("train", help="run the whole pipeline in-process")
    p.add_argument("path")
    p.add_argument(
        "--models",
        default=None,
        help=f"comma-separated model names (default: {','.join(DEFAULT_MODELS)})",
    )
    p.add_argument("--protocol", default="temporal")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--margin", type=float, default=0.0)
    p.add_argument(
        "--rerank-strength",
        type=float,
        default=0.0,
        help="re-rank the written recommendations against popularity, "
        "0 (off) to 1 (default: %(default)s)",
    )
    p.add_argument("--run-key", default=None, help="run folder name (default: a timestamp)")
    _add_data_options(p)

    p = sub.add_parser("benchmark", help="train and evaluate models on one split")
    p.add_argument("--data", required=True)
    p.add_argument("--protocol", default="msr", choices=["msr", "temporal", "loo"])
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated model names (default: %(default)s)",
    )
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--output", help="write the JSON report here")
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        default=None,
        help="also report the re-ranking trade-off of this model",
    )
    p.add_argument(
        "--rerank-method",
        default="discount",
        choices=["discount", "popularity", "mmr"],
        help="discount: score / (1 + popularity)^lam; popularity: additive "
        "penalty; mmr: genre diversity (default: %(default)s)",
    )
    p.add_argument(
        "--rerank-lams",
        default=None,
        help="comma-separated knob values in [0, 1] (default: a fixed grid)",
    )
    p.add_argument("--rerank-pool", type=int, default=100, help="candidates re-ranked per user")
    p.add_argument("--rerank-plot", default=None, help="write the trade-off plot (PNG) here")
    p.add_argument("--no-cold-users", action="store_true", help="skip the cold-user section")
    _add_data_options(p)

    p = sub.add_parser("rollback", help="move champion back to previous_champion")
    p.add_argument("--reason", default="manual rollback", help="why (recorded)")

    p = sub.add_parser("promote", help="make a registered version the champion by hand")
    p.add_argument("--version", type=int, required=True)
    p.add_argument("--reason", required=True, help="why (recorded in the decision)")

    p = sub.add_parser(
        "recommend",
        help="top-K for a user from the registry's champion",
        description="A user the champion does not know is served by the "
        "cold-start chain; the onboarding options steer it.",
    )
    p.add_argument("--user", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--liked-items",
        default=None,
        metavar="ID,ID",
        help="items a new user says they like (onboarding)",
    )
    p.add_argument(
        "--liked-genres",
        default=None,
        metavar="GENRE,GENRE",
        help="genres a new user says they like (onboarding)",
    )
    p.add_argument("--age", type=int, default=None, help="a new user's age (segment)")
    p.add_argument("--gender", default=None, help="a new user's gender (segment)")
    p.add_argument("--occupation", default=None, help="a new user's occupation (segment)")

    sub.add_parser("status", help="the champion, its metrics and the latest outputs")
    return parser


def _typed_id(raw: str):
    """Interpret an id typed on the command line (ints stay ints)."""
    try:
        return int(raw)
    except ValueError:
        return raw


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
    from recsys.models import DEFAULT_MODELS
    from recsys.pipeline import PipelineOptions, run_pipeline

    models = tuple(args.models.split(",")) if args.models else DEFAULT_MODELS
    options = PipelineOptions(
        data_path=args.path,
        data_format=args.data_format,
        columns=_columns(args),
        models=models,
        protocol=args.protocol,
        k=args.k,
        margin=args.margin,
        rerank_strength=args.rerank_strength,
    )
    run_key = args.run_key or time.strftime("cli-%Y%m%dT%H%M%S")
    summary = run_pipeline(options, run_key, now=time.time())
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from recsys.pipeline.benchmark import (
        format_rerank_table,
        format_table,
        plot_rerank_tradeoff,
        run_benchmark,
    )

    rerank = None
    if args.rerank:
        lams = tuple(float(v) for v in args.rerank_lams.split(",")) if args.rerank_lams else None
        rerank = {
            "model": args.rerank,
            "method": args.rerank_method,
            "lams": lams,
            "pool": args.rerank_pool,
        }
    report = run_benchmark(
        args.data,
        protocol=args.protocol,
        models=args.models.split(","),
        k=args.k,
        data_format=args.data_format,
        columns=_columns(args),
        rerank=rerank,
        cold_users=not args.no_cold_users,
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

    decision = registry.rollback(reason=args.reason)
    print(
        f"champion is version {decision.candidate_version} again "
        f"(version {decision.champion_version} is previous_champion): {decision.reason}"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from recsys import registry

    decision = registry.promote_manually(args.version, args.reason)
    print(f"champion is version {decision.candidate_version}: {decision.reason}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from recsys import registry

    answers = {"age": args.age, "gender": args.gender, "occupation": args.occupation}
    for column, raw in (("liked_items", args.liked_items), ("liked_genres", args.liked_genres)):
        if raw:
            values = [v.strip() for v in raw.split(",") if v.strip()]
            answers[column] = [_typed_id(v) for v in values] if column == "liked_items" else values
    answers = {c: v for c, v in answers.items() if v is not None}
    recs = registry.recommend_for_users([_typed_id(args.user)], k=args.k, answers=answers)
    print(recs.to_string(index=False))
    return 0


#: Besides the ranking metrics at K, what `recsys status` shows of the champion.
HEADLINE_METRICS = ("coverage", "novelty", "diversity", "train_seconds")


def cmd_status(args: argparse.Namespace) -> int:
    from recsys import config, registry

    champion = registry.get_champion()
    if champion is None:
        print(
            f"no champion yet for model '{config.model_name()}'; run `recsys train` "
            "or the recsys_training DAG"
        )
        return 1
    print(
        f"champion: {config.model_name()} version {champion['version']} "
        f"({champion.get('model_type')})"
    )
    metrics = champion.get("metrics", {})
    headline = {
        n: v
        for n, v in sorted(metrics.items())
        if n in HEADLINE_METRICS or ("@" in n and "." not in n)
    }
    width = max(map(len, headline), default=0)
    for name, value in headline.items():
        print(f"  {name:>{width}}: {value:.4f}")
    if len(metrics) > len(headline):
        print(f"  (+{len(metrics) - len(headline)} more, slices included, in the MLflow run)")
    runs = sorted(
        (config.recsys_home() / "runs").glob("*/recommendations.parquet"),
        key=lambda p: p.stat().st_mtime,
    )
    if runs:
        print(f"latest recommendations: {runs[-1]}")
    print(f"MLflow UI: .venv/bin/mlflow ui --backend-store-uri {config.tracking_uri()}")
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "validate": cmd_validate,
    "train": cmd_train,
    "benchmark": cmd_benchmark,
    "recommend": cmd_recommend,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "promote": cmd_promote,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``recsys`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except (RecsysError, FileNotFoundError) as exc:
        # Problems a user can fix: bad data, wrong paths, unknown names, no champion.
        log.debug("details", exc_info=True)
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
