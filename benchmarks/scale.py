"""What one training run costs as the data grows: every step, every model, time and memory.

``make bench-scale`` runs this. For each size it generates a synthetic data set
(``recsys generate``), then runs the training pipeline's own step functions in
order, each in a process of its own, as Airflow runs each task, and records
the step's wall time and peak resident memory, and for each model its fit,
scoring and the rest (its figures and slices, MLflow logging, opening the store,
reading the run, saving). The machine's load average is recorded beside every figure.

Writes ``<out>/scale.json``, ``<out>/scale.md`` (one table per size plus a
summary) and ``<out>/scale.png`` (log-log: cost against interactions).

Usage::

    python benchmarks/scale.py --sizes 0.2,1,3,10 --out var/bench/scale
    python benchmarks/scale.py --sizes 2 --models popularity,itemknn,als,ease,content
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

#: Million interactions → (users, items) of the synthetic data set.
SHAPES = {
    0.2: (10_000, 4_000),
    1: (30_000, 12_000),
    2: (50_000, 20_000),
    3: (70_000, 25_000),
    10: (200_000, 50_000),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="0.2,1,3,10", help="million interactions, commas")
    parser.add_argument("--models", default=None, help="models to train (default: the DAG's)")
    parser.add_argument("--out", default="var/bench/scale", help="output folder")
    parser.add_argument("--step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return _child(args.step)
    from recsys.models import DEFAULT_MODELS

    models = args.models.split(",") if args.models else list(DEFAULT_MODELS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"models": models, "sizes": []}
    for size in (float(s) for s in args.sizes.split(",")):
        report["sizes"].append(_size(size, models, out))
        _write(report, out)
    print(f"wrote {out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'}")
    return 0


def _size(size: float, models: list[str], out: Path) -> dict:
    users, items = SHAPES.get(size, (int(size * 25_000), int(size * 10_000)))
    interactions = int(size * 1_000_000)
    home = out / f"{size:g}M"
    data = home / "data"
    # Each step's process reads its modules' cached bytecode, as Airflow's task
    # processes do; without it every step compiles MLflow and the rest again (3 s).
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env = {
        **inherited,
        "RECSYS_HOME": str(home / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{(home / 'mlflow.db').resolve()}",
        "RECSYS_ARTIFACT_ROOT": (home / "artifacts").resolve().as_uri(),
        "RECSYS_DATA_PATH": str(data.resolve()),
    }
    if not (data / "interactions.parquet").is_file():
        _run(
            [
                sys.executable,
                "-m",
                "recsys.cli",
                "generate",
                "--users",
                str(users),
                "--items",
                str(items),
                "--interactions",
                str(interactions),
                "--out",
                str(data),
            ],
            env,
        )
    steps = [
        ("validate", {"data_path": str(data.resolve())}),
        ("prepare", {}),
        ("build_features", {}),
    ]
    steps += [(f"train_{m}", {"model": m, "models": models}) for m in models]
    steps += [("evaluate", {"models": models}), ("promote", {}), ("recommend", {})]
    print(f"{size:g}M interactions ({users:,} users, {items:,} items):", flush=True)
    rows = []
    run_key = f"scale-{size:g}M-{int(time.time())}"
    for name, extra in steps:
        row = _measure(name, run_key, extra, env)
        rows.append(row)
        print(
            f"  {name:<18} {row['seconds']:8.1f}s  {row['peak_rss_gb']:6.2f} GB  "
            f"load {row['load_average']}",
            flush=True,
        )
        if row["error"]:
            print(f"    failed: {row['error']}", flush=True)
            break
    return {"million_interactions": size, "users": users, "items": items, "steps": rows}


def _measure(step: str, run_key: str, extra: dict, env: dict) -> dict:
    load = [round(v, 2) for v in os.getloadavg()]
    command = [sys.executable, __file__, "--step", step, run_key, json.dumps(extra)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    facts = json.loads(lines[-1]) if lines else {}
    error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]
    return {
        "step": step,
        "seconds": round(seconds, 2),
        "load_average": load,
        "peak_rss_gb": round(facts.get("peak_rss_kb", 0) / 1e6, 3),
        "error": error,
        **{k: v for k, v in facts.items() if k != "peak_rss_kb"},
    }


def _child(argv: list[str]) -> int:
    """One step in this process; prints its facts (and peak RSS) as one JSON line."""
    step, run_key, extra = argv[0], argv[1], json.loads(argv[2])
    from recsys import pipeline

    facts: dict = {}
    if step == "validate":
        pipeline.validate_data(run_key, extra["data_path"], now=time.time())
    elif step == "prepare":
        pipeline.prepare_data(run_key)
    elif step == "build_features":
        pipeline.build_features(run_key)
    elif step.startswith("train_"):
        start = time.perf_counter()
        result = pipeline.train_model(run_key, extra["model"], models=extra["models"])
        total = time.perf_counter() - start
        parts = result["seconds"]
        facts = {
            "fit_seconds": round(parts["fit"], 2),
            "score_seconds": round(parts["score"], 2),
            "other_seconds": round(total - parts["fit"] - parts["score"], 2),
            # The rest, part by part (see recsys.pipeline.train_model's "seconds").
            "parts": {name: round(v, 2) for name, v in parts.items() if name != "total"},
            "ndcg@10": result["metrics"].get("ndcg@10"),
        }
    elif step == "evaluate":
        pipeline.evaluate_candidates(run_key, extra["models"])
    elif step == "promote":
        evaluation = pipeline.RunFolder(run_key).read_json("evaluation.json")
        facts = {"verdict": pipeline.promote(run_key, evaluation)["verdict"]}
    elif step == "recommend":
        facts = {"users": pipeline.recommend_all(run_key)["users"]}
    facts["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(facts))
    return 0


def _run(command: list[str], env: dict) -> None:
    subprocess.run(command, env=env, check=True, capture_output=True)


def _write(report: dict, out: Path) -> None:
    (out / "scale.json").write_text(json.dumps(report, indent=2))
    (out / "scale.md").write_text(_markdown(report))
    _plot(report, out / "scale.png")


def _markdown(report: dict) -> str:
    sizes = report["sizes"]
    steps = [row["step"] for row in sizes[0]["steps"]] if sizes else []
    head = "| step | " + " | ".join(f"{s['million_interactions']:g}M s / GB" for s in sizes)
    lines = [head + " |", "|---" * (len(sizes) + 1) + "|"]
    for step in steps:
        cells = []
        for size in sizes:
            row = next((r for r in size["steps"] if r["step"] == step), None)
            cells.append(
                "-"
                if row is None
                else (
                    f"failed: {row['error'][:40]}"
                    if row["error"]
                    else f"{row['seconds']:.1f} / {row['peak_rss_gb']:.2f}"
                )
            )
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    total = [sum(r["seconds"] for r in s["steps"]) for s in sizes]
    peak = [max((r["peak_rss_gb"] for r in s["steps"]), default=0) for s in sizes]
    lines.append(
        "| **whole run** | "
        + " | ".join(f"**{t / 60:.1f} min / {p:.2f}**" for t, p in zip(total, peak, strict=True))
        + " |"
    )
    lines += [
        "",
        "Per model, seconds of the training step (in its process, after the imports): "
        "fit, scoring every test user as served, and the rest: their figures and "
        "slices, logging to MLflow (the pyfunc included), opening MLflow's store, "
        "reading the run, saving the model; the rest as a share of fit and scoring.",
        "",
    ]
    for size in sizes:
        models = [r for r in size["steps"] if r["step"].startswith("train_") and not r["error"]]
        lines += [
            f"{size['million_interactions']:g}M:",
            "",
            "| model | fit | score | evaluate | log | open store | read run | save "
            "| rest / (fit + score) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in models:
            part = r.get("parts", {})
            names = ("evaluate", "log", "mlflow_start", "load", "save")
            cells = [part.get(name, float("nan")) for name in names]
            core = r["fit_seconds"] + r["score_seconds"]
            share = f"{100 * r['other_seconds'] / core:.0f} %" if core else "-"
            lines.append(
                f"| {r['step'][6:]} | {r['fit_seconds']:.1f} | {r['score_seconds']:.1f} | "
                + " | ".join(f"{c:.1f}" for c in cells)
                + f" | {share} |"
            )
        lines.append("")
    loads = [r["load_average"][0] for s in sizes for r in s["steps"]]
    if loads:
        lines += ["", f"Load average (1 min) during the steps: {min(loads):.2f}-{max(loads):.2f}."]
    return "\n".join(lines) + "\n"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    if not sizes:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    steps = [row["step"] for row in sizes[0]["steps"]]
    colours = plt.get_cmap("tab20").colors
    for n, step in enumerate(steps):
        xs, ys = [], []
        for size in sizes:
            row = next((r for r in size["steps"] if r["step"] == step and not r["error"]), None)
            if row:
                xs.append(size["million_interactions"] * 1e6)
                ys.append(row["seconds"])
        if xs:
            ax.plot(xs, ys, "os^Dv"[n % 5] + "-", color=colours[n % len(colours)], label=step)
    whole = [
        (s["million_interactions"] * 1e6, sum(r["seconds"] for r in s["steps"])) for s in sizes
    ]
    ax.plot(*zip(*whole, strict=True), "k*-", linewidth=2, label="whole run")
    # Linear growth from the smallest size's whole run, to read slopes against.
    x0, y0 = whole[0]
    xs = [x for x, _ in whole]
    ax.plot(xs, [y0 * x / x0 for x in xs], "k:", linewidth=1, label="linear in interactions")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds (each step in its own process)")
    ax.set_title("Training run cost against data size, 2 cores")
    ax.legend(fontsize=7, ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
