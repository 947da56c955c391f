"""The same synthetic data through both engines: the data steps and ALS, time and memory.

For each size it generates a synthetic data set (``recsys generate``, cached
in ``<out>/<size>M/data``), then runs, once with ``RECSYS_ENGINE=local`` and
once with ``RECSYS_ENGINE=spark`` (Spark in local mode, ``SPARK_MASTER``
default ``local[*]``, spilling to its local directory), the pipeline's own step
functions in order, each in a process of its own as Airflow runs each task:
``validate``, ``prepare``, ``build_features`` and ALS (``als`` on the local
engine, ``spark_als`` on Spark). Each step's wall time and peak resident memory
are recorded: the Python process's, and for Spark the JVM's (its ``VmHWM``),
both counted; the load average is recorded beside every figure.
A Spark step includes its JVM's start (tens of seconds on a busy machine).

Writes ``<out>/engines.json`` and ``<out>/engines.md``.

Usage::

    python benchmarks/engines.py --sizes 1 --out var/bench/engines
    python benchmarks/engines.py --sizes 1,10 --driver-memory 8g   # the larger runs
    python benchmarks/engines.py --sizes 10 --from-step build_features --to-step build_features
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

#: Million interactions -> (users, items), as benchmarks/scale.py.
SHAPES = {
    0.2: (10_000, 4_000),
    1: (30_000, 12_000),
    3: (70_000, 25_000),
    10: (200_000, 50_000),
    40: (800_000, 100_000),
    80: (1_600_000, 150_000),
}
STEPS = ("validate", "prepare", "build_features", "train_als")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1", help="million interactions, commas")
    parser.add_argument("--out", default="var/bench/engines", help="output folder")
    parser.add_argument("--engines", default="local,spark", help="engines to run, commas")
    parser.add_argument("--driver-memory", default="4g", help="SPARK_DRIVER_MEMORY (local mode)")
    parser.add_argument(
        "--from-step",
        default=STEPS[0],
        choices=STEPS,
        help="resume an earlier run of the same size at this step",
    )
    parser.add_argument("--to-step", default=STEPS[-1], choices=STEPS, help="stop after this step")
    parser.add_argument("--step", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return _child(args.step)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"sizes": []}
    for size in (float(s) for s in args.sizes.split(",")):
        steps = STEPS[STEPS.index(args.from_step) : STEPS.index(args.to_step) + 1]
        engines = args.engines.split(",")
        report["sizes"].append(_size(size, engines, steps, args.driver_memory, out))
        (out / "engines.json").write_text(json.dumps(report, indent=2))
        (out / "engines.md").write_text(_markdown(report))
    print((out / "engines.md").read_text())
    return 0


def _size(
    size: float, engines: list[str], steps: tuple[str, ...], driver_memory: str, out: Path
) -> dict:
    users, items = SHAPES.get(size, (int(size * 25_000), int(size * 10_000)))
    home = out / f"{size:g}M"
    data = (home / "data").resolve()
    base = {
        # Steps read their modules' cached bytecode, as Airflow's task processes do.
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "MLFLOW_TRACKING_URI": f"sqlite:///{(home / 'mlflow.db').resolve()}",
        "RECSYS_ARTIFACT_ROOT": (home / "artifacts").resolve().as_uri(),
        "SPARK_DRIVER_MEMORY": driver_memory,
        "RECSYS_SPARK_CONF": json.dumps(
            {
                "spark.ui.enabled": "false",
                "spark.ui.showConsoleProgress": "false",
                "spark.local.dir": str((home / "spark-local").resolve()),
            }
        ),
    }
    if not (data / "interactions.parquet").is_file():
        command = [sys.executable, "-m", "recsys.cli", "generate", "--users", str(users)]
        command += ["--items", str(items), "--interactions", str(int(size * 1e6))]
        subprocess.run([*command, "--out", str(data)], env=base, check=True, capture_output=True)
    print(f"{size:g}M interactions ({users:,} users, {items:,} items):", flush=True)
    result = {"million_interactions": size, "users": users, "items": items, "engines": {}}
    for engine in engines:
        env = {**base, "RECSYS_ENGINE": engine, "RECSYS_HOME": str(home / f"home-{engine}")}
        run_key = f"engines-{size:g}M-{engine}"
        rows = []
        for step in steps:
            row = _measure(step, run_key, str(data), env)
            rows.append(row)
            print(
                f"  {engine:<5} {step:<15} {row['seconds']:8.1f}s  python {row['python_gb']:.2f} GB"
                f"  jvm {row['jvm_gb']:.2f} GB  load {row['load_average']}",
                flush=True,
            )
            if row["error"]:
                print(f"    failed: {row['error']}", flush=True)
                break
        result["engines"][engine] = rows
    return result


def _measure(step: str, run_key: str, data: str, env: dict) -> dict:
    load = [round(v, 2) for v in os.getloadavg()]
    command = [sys.executable, __file__, "--step", step, run_key, data]
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
        "python_gb": round(facts.get("python_kb", 0) / 1e6, 3),
        "jvm_gb": round(facts.get("children_kb", 0) / 1e6, 3),
        "error": error,
    }


def _child(argv: list[str]) -> int:
    """One step in this process; prints its peak memory (Python, Spark JVM) as JSON."""
    step, run_key, data = argv
    from recsys import config, pipeline

    if step == "validate":
        pipeline.validate_data(run_key, data, now=time.time())
    elif step == "prepare":
        pipeline.prepare_data(run_key)
    elif step == "build_features":
        pipeline.build_features(run_key)
    else:
        model = "spark_als" if config.engine() == "spark" else "als"
        pipeline.train_model(run_key, model)
    facts = {
        "python_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_kb": _jvm_peak_kb() if config.engine() == "spark" else 0,
    }
    print(json.dumps(facts))
    return 0


def _jvm_peak_kb() -> int:
    """Peak resident memory of this process's Spark JVM (``VmHWM``), 0 without one."""
    from pyspark import SparkContext

    gateway = SparkContext._gateway  # noqa: SLF001 - the launched JVM's handle
    proc = getattr(gateway, "proc", None)
    if proc is None:
        return 0
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _markdown(report: dict) -> str:
    lines = [
        "| size | step | local s | local GB | spark s | spark GB (python + JVM) |",
        "|---|---|---|---|---|---|",
    ]
    loads = []
    for size in report["sizes"]:
        for step in STEPS:
            cells = []
            for engine in ("local", "spark"):
                rows = size["engines"].get(engine, [])
                row = next((r for r in rows if r["step"] == step), None)
                if row is None:
                    cells += ["-", "-"]
                    continue
                loads.append(row["load_average"][0])
                if row["error"]:
                    cells += [f"failed: {row['error'][:40]}", "-"]
                elif engine == "local":
                    cells += [f"{row['seconds']:.1f}", f"{row['python_gb']:.2f}"]
                else:
                    total = row["python_gb"] + row["jvm_gb"]
                    cells += [
                        f"{row['seconds']:.1f}",
                        f"{total:.2f} ({row['python_gb']:.2f} + {row['jvm_gb']:.2f})",
                    ]
            lines.append(
                f"| {size['million_interactions']:g}M | {step} | " + " | ".join(cells) + " |"
            )
    if loads:
        lines += [
            "",
            f"Load average (1 min) at the steps' start: {min(loads):.2f}-{max(loads):.2f}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
