"""Load test of the recommendation service beside ``mlflow models serve``, one run, one table.

``make bench-serve`` runs it on the embedded default's champion (after
``make demo``). It:

1. writes the champion's batch lists for every known user to Redis under a
   private key prefix (as the ``recommend`` task does), removed at the end;
2. starts ``recsys serve`` (``--workers`` processes, one per core by default,
   access log on, into a file) and ``mlflow models serve`` of the same champion
   (``--env-manager local``, as many workers), each on its own 127.0.0.1 port;
3. drives each with wrk (a C load generator from the Debian package ``wrk``;
   one thread, ``--connections`` open connections, closed loop), after a
   short warm-up, for ``--duration`` seconds per scenario:

   - ``cache``: ``GET /recommendations/{user}`` for users in the batch cache;
   - ``model``: the same with ``Cache-Control: no-cache`` (the model scores);
   - ``fold-in``: ``POST /recommendations`` for a new user with three recent items;
   - ``mlflow``: ``POST /invocations`` of ``mlflow models serve`` for one known user;

   each flat out (``--connections``), then paced: ``--paced-connections``
   connections, each waiting a random (exponential) time before every request,
   so that requests arrive as a Poisson stream, offering ``--rate``
   requests/s, or 60 % of the flat-out throughput when that is less;

4. writes ``serve.json`` and ``serve.md`` (requests/s, p50/p90/p99/max,
   errors, wrk's own CPU and the server's CPU, the load average before and
   after) under ``--out``.

Only 127.0.0.1 is ever contacted; every run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

LUA = r"""
local requests = {}
local n = 0
init = function(args)
  for line in io.lines("__REQUESTS__") do
    local method, path, body = line:match("^(%S+)\t(%S+)\t(.*)$")
    local headers = {}
    if body ~= "" then headers["Content-Type"] = "application/json" else body = nil end
    __HEADERS__
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
end
request = function()
  n = n % #requests + 1
  return requests[n]
end
delay = function()
  -- A random wait, exponential with mean __DELAY__ ms: arrivals then form a Poisson
  -- stream, as independent users do, instead of connections firing in step.
  if __DELAY__ == 0 then return 0 end
  return -math.log(1 - math.random()) * __DELAY__
end
done = function(summary, latency, _)
  local e = summary.errors
  local f = io.open("__OUT__", "w")
  f:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"min": %d, "mean": %.1f, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "max": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
  f:close()
end
"""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print("bench-serve needs wrk: apt-get install wrk (Debian's package)", file=sys.stderr)
        return 2
    from recsys import config
    from recsys.registry.snapshot import current_copy, default_model

    name = args.model or default_model()
    snapshot, copy = current_copy(name)
    served = snapshot.served(copy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    prefix = f"bench-{os.getpid()}"
    rng = random.Random(0)
    users = list(served.id_map.users)
    items = list(served.id_map.items)
    print(
        f"{name} version {copy.version} ({copy.model_type}): {len(users)} users, {len(items)} items"
    )
    _cache_batch(served, name, copy.version, args.redis_url, prefix, args.k)
    processes: list[subprocess.Popen] = []
    report: dict[str, Any] = {
        "model": name,
        "version": copy.version,
        "model_type": copy.model_type,
        "folds_in": bool(served.model.folds_in),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "load_before": _uptime(),
        "scenarios": [],
    }
    try:
        serve_port, mlflow_port = _free_port(), _free_port()
        serve = _start(
            [
                sys.executable,
                "-m",
                "recsys.cli",
                "serve",
                "--model",
                name,
                "--port",
                str(serve_port),
                "--workers",
                str(args.workers),
            ]
            + ["--redis-url", args.redis_url],
            {"RECSYS_CACHE_PREFIX": prefix},
            work / "serve.log",
        )
        processes.append(serve)
        mlflow = _start(
            [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m"]
            + [f"models:/{name}@champion", "--env-manager", "local", "-w", str(args.workers)]
            + ["-h", "127.0.0.1", "-p", str(mlflow_port)],
            {
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                # The deployment's store, not MLflow's own default (./mlflow.db).
                "MLFLOW_TRACKING_URI": config.tracking_uri(),
            },
            work / "mlflow.log",
        )
        processes.append(mlflow)
        base, mlflow_base = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{mlflow_port}"
        _wait(f"{base}/ready", serve, work / "serve.log")
        _wait(f"{mlflow_base}/ping", mlflow, work / "mlflow.log")
        known = [rng.choice(users) for _ in range(2000)]
        scenarios = [
            (
                "cache",
                "recsys serve, batch cache hit",
                serve,
                base,
                [("GET", f"/recommendations/{u}?k={args.k}", "") for u in known],
                "",
            ),
            (
                "model",
                "recsys serve, live model scoring",
                serve,
                base,
                [("GET", f"/recommendations/{u}?k={args.k}", "") for u in known],
                'headers["Cache-Control"] = "no-cache"',
            ),
            (
                "fold-in",
                "recsys serve, POST with 3 recent items (new user)",
                serve,
                base,
                [
                    (
                        "POST",
                        "/recommendations",
                        json.dumps(
                            {
                                "user_id": f"bench-new-{n}",
                                "recent_items": rng.sample(items, 3),
                                "k": args.k,
                            },
                            default=_plain,
                        ),
                    )
                    for n in range(2000)
                ],
                "",
            ),
            (
                "mlflow",
                "mlflow models serve, POST /invocations",
                mlflow,
                mlflow_base,
                [
                    (
                        "POST",
                        "/invocations",
                        json.dumps(
                            {
                                "dataframe_split": {"columns": ["user_id"], "data": [[u]]},
                                "params": {"k": args.k},
                            },
                            default=_plain,
                        ),
                    )
                    for u in known[:500]
                ],
                "",
            ),
        ]
        for key, label, process, url, requests, headers in scenarios:
            script = _script(work, key, requests, headers)
            sample = _sample(url, requests[0], headers)
            _wrk(wrk, url, script, work / f"{key}.warm.json", args.connections, args.warmup)
            flat = _measure(wrk, url, script, work / f"{key}.json", args, process)
            flat.update(
                scenario=key,
                label=label,
                served_by=sample,
                pace=f"flat out, {args.connections} conns",
            )
            report["scenarios"].append(flat)
            print(_row(flat), flush=True)
            # The same at a steady rate the server sustains: the goal's rate, or
            # 60 % of what it managed flat out when that is less.
            # Many connections, each waiting most of the time, offer a rate that
            # hardly depends on the latency (a closed loop with think time).
            target = min(args.rate, 0.6 * flat["rps"])
            service_ms = 1000 * flat["server_cpu_pct"] / 100 / max(flat["rps"], 1)
            delay = max(1, round(args.paced_connections * 1000 / target - service_ms))
            paced_script = _script(work, key, requests, headers, delay)
            paced = _measure(
                wrk,
                url,
                paced_script,
                work / f"{key}.paced.json",
                args,
                process,
                connections=args.paced_connections,
            )
            paced.update(
                scenario=f"{key}-paced",
                label=label,
                served_by=sample,
                pace=f"paced: {target:.0f} req/s offered, {args.paced_connections} conns",
            )
            report["scenarios"].append(paced)
            print(_row(paced), flush=True)
        report["load_after"] = _uptime()
        report["serve_log_lines"] = sum(1 for _ in open(work / "serve.log"))
    finally:
        for process in processes:
            _stop(process)
        _drop_prefix(args.redis_url, prefix)
    (out / "serve.json").write_text(json.dumps(report, indent=2))
    (out / "serve.md").write_text(markdown(report))
    print(markdown(report))
    print(f"written: {out / 'serve.json'}, {out / 'serve.md'} (logs in {work})")
    return 0


def _parser() -> argparse.ArgumentParser:
    home = Path(os.environ.get("RECSYS_HOME", ROOT / "var"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="registered model (default: the deployment's)")
    p.add_argument("--duration", type=int, default=20, help="seconds of load per scenario")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per scenario")
    p.add_argument("--connections", type=int, default=8, help="open connections (closed loop)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes of each server, recsys and mlflow alike (default: one per core)",
    )
    p.add_argument("--k", type=int, default=10, help="list length asked")
    p.add_argument(
        "--rate", type=float, default=550.0, help="offered req/s of the paced runs (at most)"
    )
    p.add_argument(
        "--paced-connections", type=int, default=32, help="open connections of the paced runs"
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/15", help="Redis for the cache")
    p.add_argument("--out", default=str(home / "bench"), help="folder of serve.json, serve.md")
    return p


def _cache_batch(served: Any, name: str, version: int, url: str, prefix: str, k: int) -> None:
    """The batch lists of every known user, as the recommend task caches them."""
    import pandas as pd

    from recsys.serving import cache

    recs = served.recommend(pd.DataFrame({"user_id": served.id_map.users.to_numpy()}), k)
    written = cache.write_batch(recs, name, version, url, prefix=prefix, ttl_s=3600)
    print(f"cached {written['users']} lists under {written['keys_prefix']}")


def _drop_prefix(url: str, prefix: str) -> None:
    from recsys.serving.cache import connect

    client = connect(url, timeout_s=5)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url}: not ready in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _script(
    work: Path, key: str, requests: list[tuple[str, str, str]], headers: str, delay_ms: int = 0
) -> Path:
    """wrk's Lua script: cycle through ``requests``; each connection waits
    on average ``delay_ms`` (exponentially distributed) before each request (0: flat out)."""
    lines = work / f"{key}.requests"
    lines.write_text("".join(f"{m}\t{p}\t{b}\n" for m, p, b in requests))
    script = work / f"{key}-{delay_ms}.lua"
    script.write_text(
        LUA.replace("__REQUESTS__", str(lines))
        .replace("__HEADERS__", headers)
        .replace("__DELAY__", str(int(delay_ms)))
        .replace("__OUT__", str(work / "done.json"))
    )
    return script


def _sample(base: str, request: tuple[str, str, str], headers: str) -> str:
    """Who answered one request of the scenario (``served_by``), for the table."""
    import httpx

    method, path, body = request
    extra = {"Cache-Control": "no-cache"} if "no-cache" in headers else {}
    answer = httpx.request(
        method,
        base + path,
        content=body or None,
        headers={"Content-Type": "application/json", **extra},
        timeout=30,
    )
    answer.raise_for_status()
    payload = answer.json()
    if "predictions" in payload:
        return "mlflow pyfunc: " + ",".join(
            sorted({p["served_by"] for p in payload["predictions"]})
        )
    return payload["served_by"]


def _wrk(wrk: str, base: str, script: Path, out: Path, connections: int, seconds: int) -> dict:
    done = script.parent / "done.json"
    done.unlink(missing_ok=True)
    subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            base,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    result = json.loads(done.read_text())
    out.write_text(json.dumps(result))
    return result


def _measure(
    wrk: str,
    base: str,
    script: Path,
    out: Path,
    args: argparse.Namespace,
    server: Any,
    *,
    connections: int | None = None,
) -> dict:
    import psutil

    tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
    server_before = sum(sum(p.cpu_times()[:2]) for p in tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    connections = connections or args.connections
    raw = _wrk(wrk, base, script, out, connections, args.duration)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = sum(sum(p.cpu_times()[:2]) for p in tree)
    seconds = raw["duration_us"] / 1e6
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lat = raw["latency_us"]
    return {
        "connections": connections,
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": lat["p50"] / 1000,
        "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000,
        "max_ms": lat["max"] / 1000,
        "errors": sum(raw["errors"].values()),
        "error_kinds": raw["errors"],
        "wrk_cpu_pct": round(100 * wrk_cpu / seconds, 1),
        "server_cpu_pct": round(100 * (server_after - server_before) / seconds, 1),
        # CPU time the server spent per answer: hardly moved by other processes'
        # load, unlike the latencies, so it says what two quiet cores would give.
        "server_cpu_ms_per_request": round(
            1000 * (server_after - server_before) / max(raw["requests"], 1), 3
        ),
    }


def markdown(report: dict) -> str:
    """The report as the README shows it."""
    mlflow = next((s for s in report["scenarios"] if s["scenario"] == "mlflow"), None)
    lines = [
        f"`{report['model']}` version {report['version']} ({report['model_type']}), "
        f"{report['cores']} cores, {report.get('workers', 1)} worker(s) per server, "
        f"wrk 1 thread, {report['duration_s']} s per run; "
        f"load average before "
        f"{report['load_before']}, after {report.get('load_after', '?')}",
        "",
        "| scenario | load | served_by | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| × mlflow | wrk CPU | server CPU | server CPU ms/request |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        flat = "paced" not in s["scenario"]
        ratio = f"{s['rps'] / mlflow['rps']:.1f}×" if flat and mlflow and mlflow["rps"] else ""
        lines.append(
            f"| {s['label']} | {s['pace']} | {s['served_by']} | {s['rps']:.0f} | "
            f"{s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} | "
            f"{s['errors']} | "
            f"{ratio} | {s['wrk_cpu_pct']:.0f} % | {s['server_cpu_pct']:.0f} % | "
            f"{s['server_cpu_ms_per_request']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _row(s: dict) -> str:
    return (
        f"{s['scenario']:>14}: {s['rps']:8.0f} req/s  p50 {s['p50_ms']:6.1f} ms  "
        f"p99 {s['p99_ms']:6.1f} ms  errors {s['errors']}  wrk CPU {s['wrk_cpu_pct']:.0f} %"
    )


def _uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


if __name__ == "__main__":
    sys.exit(main())
