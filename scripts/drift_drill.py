"""A drill of monitoring and erasure on synthetic data, end to end, in one RECSYS_HOME.

    .venv/bin/python scripts/drift_drill.py --home var/drill [--screenshot page.png]

1. A steady synthetic stream: its first 60 % becomes the store's data and
   trains a champion (``recsys train``'s steps).
2. Batches land one by one, an hour apart, through ingest and monitoring, as
   the DAGs run them: twenty unshifted batches, a popularity shift; the
   decision says retrain, so the pipeline retrains (a new champion); five
   more unshifted batches, a new-item surge, a second surge inside the cooldown.
3. One user is forgotten; the counts before and after are printed, how the
   champion served them before and after, and the next training run shows
   that its model does not know them.
4. The Recommender page is rendered to ``<home>/recommender.html`` (and, with
   ``--screenshot``, photographed by headless Chromium).

Afterwards ``RECSYS_HOME=<home> MLFLOW_TRACKING_URI=sqlite:///<home>/mlflow.db make ui``
shows the same page live.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MODELS = ("popularity", "itemknn")
T0 = 1_800_000_000.0
HOUR = 3600.0
BATCH = 500


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="RECSYS_HOME of the drill (made fresh)")
    parser.add_argument("--screenshot", default=None, help="write a PNG of the page here")
    args = parser.parse_args(argv)
    home = Path(args.home).resolve()
    if home.exists() and any(home.iterdir()):
        parser.error(f"{home} is not empty; the drill needs a fresh folder")
    os.environ.update(
        RECSYS_HOME=str(home),
        RECSYS_DATA_PATH=str(home / "data"),
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
        RECSYS_ARTIFACT_ROOT=(home / "artifacts").as_uri(),
    )
    os.environ.pop("RECSYS_PSEUDONYM_KEY", None)
    replay(home)
    forget_one(home)
    retrain_without(home)
    html = render(home)
    print(f"page: {html}")
    if args.screenshot:
        print(f"screenshot: {screenshot(html, Path(args.screenshot))}")
    return 0


def replay(home: Path) -> None:
    import numpy as np

    from recsys.data import Dataset, ingest, shifts
    from recsys.data.generate import generate_dataset
    from recsys.data.loaders import write_dataset
    from recsys.pipeline import PipelineOptions, monitor, run_pipeline

    data = generate_dataset(800, 300, 50_000, seed=7)
    rng = np.random.default_rng(7)
    stream = shifts.steady_stream(data.interactions, rng, start=1_700_000_000)
    cut = int(len(stream) * 0.6)
    base, pool = stream.iloc[:cut], stream.iloc[cut:]
    store = write_dataset(Dataset(base, data.items, data.users, "synthetic"), home / "data")
    landing = home / "landing"
    landing.mkdir(parents=True)
    options = PipelineOptions(data_path=str(store), models=MODELS, k=10)
    run_pipeline(options, "drill-initial")
    chunks = iter(pool.iloc[i * BATCH : (i + 1) * BATCH] for i in range(len(pool) // BATCH))
    hour = 0.0

    def land(frame, label: str) -> dict:
        nonlocal hour
        frame.to_csv(landing / f"{label}.csv", index=False)
        day = f"2026-11-{1 + int(hour) // 24:02d}"
        ingest.ingest_landing(landing, store, home / "quarantine", arrival=day, now=T0)
        found = monitor(now=T0 + hour * HOUR, k=10)
        print(f"h{hour:>4.0f} {label:<18} {found['action']:<8} {found['reason'][:110]}")
        if found["retrain"]:
            summary = run_pipeline(options, f"drill-retrain-h{hour:.0f}")
            verdict = "promoted" if summary["decision"]["promote"] else "held"
            print(f"      retrained: candidate {verdict}: {summary['decision']['reason'][:90]}")
        hour += 1
        return found

    for i in range(20):
        land(next(chunks), f"steady-{i:02d}")
    land(shifts.popularity_shift(next(chunks), base, rng, share=0.5), "popularity-shift")
    for i in range(5):
        land(next(chunks), f"steady-{20 + i:02d}")
    land(shifts.new_item_surge(next(chunks), data.items["item_id"], rng), "new-items")
    land(shifts.new_item_surge(next(chunks), data.items["item_id"], rng), "new-items-again")


def forget_one(home: Path) -> None:
    """Forget the most active user; with a Redis at the default address, under a key
    prefix of the drill's own, three cached lists of theirs and one of another user's."""
    import uuid

    from recsys.cli import forget_summary
    from recsys.data import ingest
    from recsys.pipeline import forget_user
    from recsys.serving.forget import cache_key

    store = ingest.read_store(home / "data").interactions
    ranked = store["user_id"].value_counts().index
    user, other = int(ranked[0]), int(ranked[1])
    prefix = f"recsys-drill-{uuid.uuid4().hex[:8]}:recs"
    client = _redis()
    # The keys the service and the recommend step write (recsys.serving.cache).
    keys = [cache_key("recsys", v, str(user), prefix) for v in (1, 2, 3)] + [
        cache_key("recsys", 3, str(other), prefix)
    ]
    for key in keys if client else []:
        client.set(key, "[cached list]", ex=600)
    served_before = _served_by(user)
    entry = forget_user(
        user, reason=f"user {user} asked to be forgotten", now=T0 + 40 * HOUR, cache_prefix=prefix
    )
    print(forget_summary(str(user), entry))
    print(f"the champion served user {user} by: {served_before} before, {_served_by(user)} after")
    print(f"rows of user {user} left in the store: {_rows_of(home, user)}")
    if client:
        left = [k for k in keys if client.exists(k)]
        print(f"cache keys left under the drill's prefix: {left}")
        client.delete(*keys)


def _served_by(user: int) -> str:
    from recsys import registry

    return ", ".join(sorted(set(registry.recommend_for_users([user], k=10)["served_by"])))


def _rows_of(home: Path, user: int) -> int:
    from recsys.data import ingest

    return int((ingest.read_store(home / "data").interactions["user_id"] == user).sum())


def retrain_without(home: Path) -> None:
    """The next training run, and whether the model it trained knows the forgotten user."""
    from recsys import registry
    from recsys.data.forgotten import default_list
    from recsys.pipeline import PipelineOptions, run_pipeline

    options = PipelineOptions(data_path=str(home / "data"), models=MODELS, k=10)
    summary = run_pipeline(options, "drill-after-erasure")
    version = summary["decision"]["candidate_version"]
    model = registry.load_model(f"models:/recsys/{version}").unwrap_python_model().served()
    known = int(default_list().mask(list(model.id_map.users)).sum())
    print(
        f"next training run: version {version} trained on {model.id_map.n_users} users, "
        f"{known} of them forgotten; decision: {summary['decision']['reason'][:80]}"
    )


def _redis():
    import redis

    from recsys import config

    client = redis.Redis.from_url(
        config.redis_url() or config.DEFAULT_REDIS_URL, socket_connect_timeout=2
    )
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        return None
    return client


def render(home: Path) -> Path:
    from recsys.ui.page import build_page
    from recsys.ui.render import render_page

    out = home / "recommender.html"
    out.write_text(render_page(build_page()))
    return out


def screenshot(html: Path, target: Path) -> Path:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(html.as_uri())
        page.locator("#monitoring").screenshot(path=str(target))
        browser.close()
    return target


if __name__ == "__main__":
    sys.exit(main())
