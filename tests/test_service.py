"""The recommendation service in-process: every route, the cache, fold-in, A/B, errors.

The app runs under Starlette's test client on a real (tiny) registered model
and a real Redis; the version holder is polled by the test, not by a thread,
so each test sees exactly the versions it set up. ``test_service_process.py``
runs ``recsys serve`` as a real process and moves the champion under it.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_harness import (
    MODEL,
    REDIS_URL,
    batch_lists,
    build_store,
    drop_prefix,
    redis_or_skip,
    store_env,
    unique_prefix,
)

from recsys.serving import cache

KEY = "serve-tests-key"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-store")
    with store_env(root) as env:
        built = build_store(root)
        built.env = env
        yield built


@pytest.fixture(scope="module")
def redis_client():
    return redis_or_skip()


@pytest.fixture
def prefix(redis_client):
    name = unique_prefix()
    yield name
    drop_prefix(redis_client, name)


def _app(store, *, prefix=None, share=0.0, key=None, model=MODEL, holder=None):
    from recsys.service.app import create_app
    from recsys.service.config import ServiceConfig
    from recsys.service.holder import CHALLENGER, ModelHolder

    settings = ServiceConfig(
        model_name=model,
        redis_url=REDIS_URL if prefix else None,
        cache_prefix=prefix or "unused",
        challenger_share=share,
        pseudonym_key=key.encode() if key else None,
    )
    if holder is None:
        aliases = ("champion", CHALLENGER) if share else ("champion",)
        holder = ModelHolder(model, aliases, root=store.root / "serving")
        holder.poll_once()
    return TestClient(create_app(settings, holder=holder)), holder


@pytest.fixture(scope="module")
def plain(store):
    """The app without cache or A/B: every answer from the model."""
    client, _ = _app(store)
    with client:
        yield client


def _items(body: dict) -> list:
    return [entry["item_id"] for entry in body["items"]]


# ----------------------------------------------------------- health, ready
def test_health_answers_and_ready_is_503_until_there_is_a_champion(store):
    client, holder = _app(store, model="never-trained")
    with client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "no champion of 'never-trained'" in ready.json()["detail"]
        answer = client.get(f"/recommendations/{store.users[0]}")
        assert answer.status_code == 503
        assert "no champion of 'never-trained' is loaded yet" in answer.json()["detail"]
        assert "recsys train" in answer.json()["detail"]
        assert client.get("/similar/1").status_code == 503


def test_ready_names_the_champion_and_its_version(plain):
    body = plain.get("/ready").json()
    assert body["ready"] is True
    assert body["model"] == MODEL
    assert body["champion"]["version"] == 1
    assert body["champion"]["model_type"] == "ease"
    assert body["champion"]["folds_in"] is True
    assert body["cache"] == "off"


# ------------------------------------------------------------- GET lists
def test_known_user_gets_the_models_list_without_seen_items(store, plain):
    user = store.users[0]
    body = plain.get(f"/recommendations/{user}", params={"k": 5}).json()
    assert body["served_by"] == "model"
    assert body["variant"] == "champion"
    assert body["model_version"] == 1
    assert body["user_id"] == str(user)
    expected = batch_lists(store, 1, [user], k=5)
    assert _items(body) == expected["item_id"].tolist()
    assert [e["rank"] for e in body["items"]] == [1, 2, 3, 4, 5]
    seen = set(store.data.interactions.query("user_id == @user")["item_id"])
    assert not seen & set(_items(body))


def test_unknown_user_goes_down_the_cold_start_chain(plain):
    body = plain.get("/recommendations/nobody-123").json()
    assert body["served_by"] == "global"
    assert len(body["items"]) == 10
    for odd in ("inf", "nan", "4.5", "%20"):
        assert plain.get(f"/recommendations/{odd}").json()["served_by"] == "global", odd
    segment = plain.post(
        "/recommendations", json={"user_id": "nobody-124", "age": 30, "gender": "F"}
    ).json()
    assert segment["served_by"].startswith("segment:")


def test_exclude_and_genres_filter_the_list(store, plain):
    user = store.users[1]
    first = _items(plain.get(f"/recommendations/{user}", params={"k": 5}).json())
    excluded = ",".join(map(str, first[:2]))
    body = plain.get(f"/recommendations/{user}", params={"k": 5, "exclude": excluded}).json()
    assert not set(first[:2]) & set(_items(body))
    assert _items(body)[:3] == first[2:]
    genre = str(store.data.items["genres"].str.split("|").explode().mode()[0])
    body = plain.get(f"/recommendations/{user}", params={"genres": genre}).json()
    genres_of = store.data.items.set_index("item_id")["genres"]
    assert body["items"] and all(genre in genres_of[i].split("|") for i in _items(body))


def test_similar_items_leave_the_item_out(store, plain):
    item = store.items[0]
    body = plain.get(f"/similar/{item}", params={"k": 4}).json()
    assert body["item_id"] == item
    assert body["served_by"] == "similarity"
    assert len(body["items"]) == 4 and item not in _items(body)
    scores = [e["score"] for e in body["items"]]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------- fold-in
def test_a_new_users_first_clicks_change_their_next_answer(store, plain):
    before = plain.get("/recommendations/brand-new").json()
    clicks = [store.items[7], store.items[8], store.items[9]]
    after = plain.post(
        "/recommendations", json={"user_id": "brand-new", "recent_items": clicks}
    ).json()
    assert before["served_by"] == "global"
    assert after["served_by"] == "model"
    assert after["folded_in"] == 3
    assert _items(after) != _items(before)
    assert not set(clicks) & set(_items(after))
    # The same history as a fitted user's row gives that user's answer (EASE reads only the row).
    user = store.users[2]
    history = store.data.interactions.query("user_id == @user")["item_id"].tolist()
    folded = plain.post(
        "/recommendations", json={"user_id": "twin-of-a-user", "recent_items": history}
    ).json()
    assert _items(folded) == _items(plain.get(f"/recommendations/{user}").json())


def test_a_known_users_recent_items_are_folded_in_and_left_out(store, plain):
    user = store.users[3]
    before = _items(plain.get(f"/recommendations/{user}").json())
    body = plain.post(
        "/recommendations",
        json={"user_id": int(user), "recent_items": before[:2] + ["no-such-item"]},
    ).json()
    assert body["served_by"] == "model" and body["folded_in"] == 2
    assert body["ignored_items"] == ["no-such-item"]
    assert not set(before[:2]) & set(_items(body))


def test_a_model_that_cannot_fold_in_falls_back_and_says_so(store):
    """The ranker and the attention network cannot score a new history: a known
    user is answered from their trained row minus the recent items, a new user
    by the chain's onboarding path with the recent items as liked items."""
    from recsys.models.popularity import PopularityRecommender
    from recsys.serving.online import OnlineModel
    from recsys.serving.served import ServedRecommender

    class NoFoldIn(PopularityRecommender):
        folds_in = False

    base = store.served[1]
    model = NoFoldIn().fit(base.X)
    online = OnlineModel(ServedRecommender(model, base.id_map, base.X, base.cold_start))
    user = store.users[0]
    plain_list = online.recommend(user, 5)
    recent = plain_list.items[:2]
    known = online.recommend(user, 5, recent=recent)
    assert known.served_by == "model" and known.fallback == "no_fold_in"
    assert known.items == plain_list.items[2:] + known.items[3:]
    new = online.recommend("brand-new", 5, recent=recent)
    assert new.served_by == "onboarding" and new.fallback == "no_fold_in"
    assert not set(recent) & set(new.items)


def _asks(store, online):
    """Requests of every kind: known users, filters, fold-in, new users with and
    without first clicks, demographics and liked genres."""
    from recsys.serving.online import Ask

    known = [online.user_id(u) for u in store.users[:4]]
    seen = set(store.data.interactions.query("user_id == @known[3]")["item_id"])
    unseen = tuple(i for i in store.items if i not in seen)[:3]
    some = np.array([0, 1, 2])
    genre = online.genre_mask([str(online._genres[1][0])])  # noqa: SLF001 - any known genre
    return [
        Ask(known[0], 5),
        Ask(known[1], 3, exclude=some),
        Ask(known[2], 5, genres=genre),
        Ask(known[3], 5, recent=unseen),
        Ask("brand-new-1", 4, recent=tuple(store.items[5:8])),
        Ask("brand-new-2", 5),
        Ask("brand-new-3", 5, demographics={"age": 30, "gender": "F"}, liked_genres=("x",)),
        Ask(known[0], 10, recent=("no-such-item",)),
    ]


@pytest.mark.parametrize("folds_in", [True, False], ids=["ease", "no-fold-in"])
def test_requests_scored_together_get_the_answers_they_get_alone(store, folds_in):
    """One scoring call for many requests (known users by row, fold-in histories
    stacked) answers each exactly as it is answered on its own."""
    from recsys.models.ease import EASERecommender
    from recsys.serving.online import OnlineModel
    from recsys.serving.served import ServedRecommender

    class NoFoldIn(EASERecommender):
        folds_in = False

    base = store.served[1]
    model = base.model if folds_in else NoFoldIn(l2=50.0).fit(base.X)
    online = OnlineModel(ServedRecommender(model, base.id_map, base.X, base.cold_start))
    asks = _asks(store, online)
    together = online.recommend_many(asks)
    alone = [online.recommend(**vars(ask)) for ask in asks]
    assert len(together) == len(asks)
    for a, b in zip(together, alone, strict=True):
        assert a.items == b.items
        assert a.scores == pytest.approx(b.scores, rel=1e-5)
        assert (a.served_by, a.fallback, a.folded_in, a.ignored) == (
            b.served_by,
            b.fallback,
            b.folded_in,
            b.ignored,
        )
    assert together[3].folded_in == (3 if folds_in else 0)
    assert together[7].ignored == ["no-such-item"]


def test_a_request_that_fails_alone_leaves_the_others_in_its_batch_answered(store):
    from recsys.serving.online import Ask, OnlineModel

    online = OnlineModel(store.served[1])
    users = [online.user_id(u) for u in store.users[:3]]
    plan = online._plan  # noqa: SLF001 - the step that reads one request

    def broken_for_the_second(ask):
        if ask.user_id == users[1]:
            raise RuntimeError("this request's own failure")
        return plan(ask)

    online._plan = broken_for_the_second  # noqa: SLF001
    answers = online.recommend_many([Ask(u, 5) for u in users])
    assert isinstance(answers[1], RuntimeError)
    assert [a.items for a in (answers[0], answers[2])] == [
        online.recommend(users[0], 5).items,
        online.recommend(users[2], 5).items,
    ]


@pytest.mark.parametrize("max_batch", [16, 2])
def test_requests_that_arrive_together_share_a_model_call(store, max_batch):
    """While one batch is scored the next requests queue; they are then scored
    in one call of at most ``max_batch``, and each still gets its own answer."""
    import asyncio
    import threading
    import time

    import httpx

    from recsys.service.app import create_app
    from recsys.service.config import ServiceConfig
    from recsys.service.holder import ModelHolder

    holder = ModelHolder(MODEL, ("champion",), root=store.root / "serving")
    holder.poll_once()
    online = holder.get().online
    sizes, first = [], threading.Event()
    scored = online.recommend_many

    def slow_first(asks):
        sizes.append(len(asks))
        if not first.is_set():  # the first call is slow: the others queue behind it
            first.set()
            time.sleep(0.3)
        return scored(asks)

    online.recommend_many = slow_first
    app = create_app(ServiceConfig(model_name=MODEL, max_batch=max_batch), holder=holder)
    users = store.users[:7]

    async def ask_all():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            gets = [client.get(f"/recommendations/{u}", params={"k": 5}) for u in users]
            answers = await asyncio.gather(*gets)
            metrics = (await client.get("/metrics")).text
        return answers, metrics

    answers, metrics = asyncio.run(ask_all())
    assert [a.status_code for a in answers] == [200] * len(users)
    assert sum(sizes) == len(users)
    assert max(sizes) <= max_batch
    assert len(sizes) < len(users)  # some requests shared a call
    for user, answer in zip(users, answers, strict=True):
        expected = batch_lists(store, 1, [user], k=5)["item_id"].tolist()
        assert _items(answer.json()) == expected
    assert f"recsys_scoring_batch_size_count {float(len(sizes))}" in metrics
    assert f"recsys_scoring_batch_size_sum {float(len(users))}" in metrics


def test_a_failing_model_call_fails_each_request_in_it_with_500_and_the_service_goes_on(store):
    from recsys.service.app import create_app
    from recsys.service.config import ServiceConfig
    from recsys.service.holder import ModelHolder

    holder = ModelHolder(MODEL, ("champion",), root=store.root / "serving")
    holder.poll_once()
    online = holder.get().online
    scored, calls = online.recommend_many, []

    def broken_once(asks):
        calls.append(len(asks))
        if len(calls) == 1:
            raise RuntimeError("scoring broke")
        return scored(asks)

    online.recommend_many = broken_once
    client = TestClient(
        create_app(ServiceConfig(model_name=MODEL), holder=holder), raise_server_exceptions=False
    )
    with client:
        assert client.get(f"/recommendations/{store.users[0]}").status_code == 500
        again = client.get(f"/recommendations/{store.users[0]}")
    assert again.status_code == 200 and again.json()["served_by"] == "model"


# -------------------------------------------------------------- the cache
def test_known_users_are_served_from_the_batch_cache_by_version(store, prefix):
    users = store.users[:5]
    recs = batch_lists(store, 1, users)
    written = cache.write_batch(recs, MODEL, 1, REDIS_URL, prefix=prefix)
    assert written == {"users": 5, "k": 10, "keys_prefix": f"{prefix}:{MODEL}:v1:"}
    client, _ = _app(store, prefix=prefix)
    with client:
        assert client.get("/ready").json()["cache"] == "up"
        body = client.get(f"/recommendations/{users[0]}", params={"k": 4}).json()
        assert body["served_by"] == "batch" and body["model_version"] == 1
        expected = recs[recs["user_id"] == users[0]]
        assert _items(body) == expected["item_id"].tolist()[:4]
        assert [e["score"] for e in body["items"]] == pytest.approx(
            expected["score"].tolist()[:4], abs=1e-6
        )
        fresh = client.get(f"/recommendations/{users[0]}", headers={"Cache-Control": "no-cache"})
        assert fresh.json()["served_by"] == "model"
        assert _items(fresh.json()) == expected["item_id"].tolist()
        # Longer than the cached list, or filtered below k: the model answers.
        assert client.get(f"/recommendations/{users[0]}?k=11").json()["served_by"] == "model"
        first = _items(body)[0]
        filtered = client.get(f"/recommendations/{users[0]}?k=9&exclude={first}").json()
        assert filtered["served_by"] == "batch" and first not in _items(filtered)
        assert client.get(f"/recommendations/{users[0]}?exclude={first}").json()["served_by"] == (
            "model"
        )
        # Not in the batch: the model.
        assert client.get(f"/recommendations/{store.users[50]}").json()["served_by"] == "model"
        text = client.get("/metrics").text
    assert 'recsys_cache_lookups_total{result="hit"} 2.0' in text
    assert 'recsys_cache_lookups_total{result="short"} 2.0' in text
    assert 'recsys_cache_lookups_total{result="miss"} 1.0' in text


def test_a_cache_that_cannot_be_reached_is_a_miss_not_an_error(store):
    from recsys.service.app import create_app
    from recsys.service.config import ServiceConfig
    from recsys.service.holder import ModelHolder

    holder = ModelHolder(MODEL, root=store.root / "serving")
    holder.poll_once()
    settings = ServiceConfig(model_name=MODEL, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings, holder=holder)) as client:
        body = client.get(f"/recommendations/{store.users[0]}").json()
        assert body["served_by"] == "model"
        assert client.get("/ready").json()["cache"] == "down"
        assert 'recsys_fallbacks_total{reason="cache_error"} 1.0' in client.get("/metrics").text


# ------------------------------------------------------------------- A/B
def test_ab_share_serves_a_stable_bucket_by_the_challenger(store):
    from recsys.service.app import bucket

    client, holder = _app(store, share=0.3)
    with client:
        assert holder.get("challenger").version == 2
        users = [f"ab-{n}" for n in range(200)] + [str(u) for u in store.users[:50]]
        first = {u: client.get(f"/recommendations/{u}").json() for u in users}
        again = {u: client.get(f"/recommendations/{u}").json()["variant"] for u in users}
        assert {u: b["variant"] for u, b in first.items()} == again
        challenged = [u for u, b in first.items() if b["variant"] == "challenger"]
        assert 0.2 < len(challenged) / len(users) < 0.4
        assert all(first[u]["model_version"] == 2 for u in challenged)
        assert all(bucket(u, "recsys-ab") < 0.3 for u in challenged)
        champions = [u for u in users if u not in challenged]
        assert all(first[u]["model_version"] == 1 for u in champions)
        # The same bucket for an id however it is typed (path string, JSON number).
        user = store.users[0]
        by_path = client.get(f"/recommendations/{user}").json()["variant"]
        by_body = client.post("/recommendations", json={"user_id": int(user)}).json()["variant"]
        assert by_path == by_body
    assert bucket("42", "recsys-ab") == bucket("42", "recsys-ab") != bucket("42", "other-salt")


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/recommendations/1?k=0", 400, "k must lie in 1..100, got 0"),
        ("/recommendations/1?k=101", 400, "k must lie in 1..100, got 101"),
        ("/recommendations/1?k=ten", 400, "k must be a whole number, got 'ten'"),
        ("/recommendations/1?exclude=nope", 400, "unknown item id(s) in exclude: 'nope'"),
        ("/recommendations/1?genres=Nope", 400, "unknown genre(s) ['Nope']; known genres:"),
        ("/similar/nope", 404, "unknown item id 'nope': not in the catalogue"),
        ("/similar/1?k=-1", 400, "k must lie in 1..100, got -1"),
    ],
)
def test_bad_query_gets_4xx_with_a_message(plain, path, status, message):
    answer = plain.get(path)
    assert answer.status_code == status
    assert answer.json()["detail"].startswith(message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"recent_items": [1]}, "malformed request: user_id: Field required"),
        ({"user_id": "u", "k": "ten"}, "malformed request: k: Input should be a valid integer"),
        ({"user_id": "u", "surprise": 1}, "malformed request: surprise: Extra inputs"),
        ({"user_id": "u", "recent_items": "1,2"}, "malformed request: recent_items: Input should"),
        ({"user_id": [1]}, "malformed request: user_id"),
    ],
)
def test_malformed_body_gets_422_with_a_message(plain, body, message):
    answer = plain.post("/recommendations", json=body)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(message)


def test_a_body_that_is_not_json_gets_422(plain):
    answer = plain.post(
        "/recommendations", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json() == {"detail": "malformed request: the body is not valid JSON"}
    bad_k = plain.post("/recommendations", json={"user_id": "u", "k": 1000})
    assert bad_k.status_code == 400 and bad_k.json()["detail"] == "k must lie in 1..100, got 1000"


# --------------------------------------------------------------- metrics
def test_metrics_count_requests_latency_and_fallbacks_by_route_never_by_id(store):
    client, _ = _app(store)
    with client:
        client.get(f"/recommendations/{store.users[0]}")
        client.get("/recommendations/secret-user-77")
        client.get("/recommendations/secret-user-78?k=0")
        client.post("/recommendations", json={"user_id": "secret-user-79", "recent_items": [1]})
        text = client.get("/metrics").text
    assert "secret-user" not in text
    lines = set(text.splitlines())
    route = 'route="/recommendations/{user_id}"'
    assert f'recsys_requests_total{{method="GET",{route},status="200"}} 2.0' in lines
    assert f'recsys_requests_total{{method="GET",{route},status="400"}} 1.0' in lines
    assert 'recsys_requests_total{method="POST",route="/recommendations",status="200"} 1.0' in lines
    assert f"recsys_request_duration_seconds_count{{{route}}} 3.0" in lines
    assert f'recsys_request_duration_seconds_bucket{{le="0.025",{route}}}' in text
    assert 'recsys_recommendations_served_total{served_by="model",variant="champion"} 2.0' in lines
    assert 'recsys_recommendations_served_total{served_by="global",variant="champion"} 1.0' in lines
    assert 'recsys_fallbacks_total{reason="cold_start:global"} 1.0' in lines
    assert 'recsys_model_version{alias="champion"} 1.0' in lines


# --------------------------------------------------------------- privacy
def test_with_a_pseudonym_key_ids_are_mapped_and_never_logged_in_clear(tmp_path, caplog):
    """A model trained on pseudonyms answers users by their own ids; the access log
    and the metrics hold only pseudonyms."""
    from recsys.data.prepare import pseudonymise_ids

    with store_env(tmp_path, RECSYS_PSEUDONYM_KEY=KEY):
        store = build_store(tmp_path, pseudonym_key=KEY)
        client, _ = _app(store, key=KEY)
        user = store.users[0]
        pseudonym = pseudonymise_ids([user], KEY)[0]
        caplog.set_level(logging.INFO, logger="recsys")
        with client:
            known = client.get(f"/recommendations/{user}").json()
            posted = client.post(
                "/recommendations", json={"user_id": int(user), "recent_items": [1]}
            ).json()
            cold = client.get("/recommendations/clear-text-id-123").json()
            metrics = client.get("/metrics").text
    assert known["served_by"] == "model" and known["user_id"] == str(user)
    assert posted["served_by"] == "model" and posted["user_id"] == int(user)
    assert cold["served_by"] == "global"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"user={pseudonym}" in logged
    assert f"user={user} " not in logged and "clear-text-id-123" not in logged
    assert "clear-text-id-123" not in metrics


# ------------------------------------------------------------- the holder
def test_the_holder_follows_the_alias_and_swaps_only_a_loaded_version(store):
    from recsys import registry
    from recsys.service.holder import ModelHolder

    seen = []
    holder = ModelHolder(
        MODEL, root=store.root / "serving", on_change=lambda a, v: seen.append((a, v))
    )
    assert not holder.ready
    holder.poll_once()
    assert holder.ready
    old = holder.get()
    assert old.version == 1
    registry.promote_manually(2, "test: the holder follows", MODEL)
    try:
        holder.poll_once()
        new = holder.get()
        assert new.version == 2 and new.model_type == "itemknn"
        # A request that started on the old version still has all it needs.
        assert old.online.recommend(store.users[0], 3).items
        holder.poll_once()
        assert holder.get() is new  # nothing moved: nothing reloaded
    finally:
        registry.rollback(MODEL, reason="test: back to version 1")
    holder.poll_once()
    assert holder.get().version == 1
    assert seen == [("champion", 1), ("champion", 2), ("champion", 1)]


def test_cached_lists_round_trip_with_their_id_types(store, prefix, redis_client):
    recs = pd.DataFrame(
        {
            "user_id": ["a", "a", 7],
            "item_id": [np.int64(3), np.int64(1), "x"],
            "score": [0.5, 0.25, 1.0],
            "rank": [1, 2, 1],
        }
    )
    cache.write_batch(recs, "m", 4, REDIS_URL, prefix=prefix, ttl_s=60)
    stored = json.loads(redis_client.get(f"{prefix}:m:v4:u:a"))
    assert stored == {"i": [3, 1], "s": [0.5, 0.25]}
    assert json.loads(redis_client.get(f"{prefix}:m:v4:meta"))["users"] == 2
    assert 0 < redis_client.ttl(f"{prefix}:m:v4:u:7") <= 60


# ---------------------------------------------------------------- settings
def test_settings_come_from_flags_over_the_environment(monkeypatch):
    from recsys.service.config import ServiceConfig

    monkeypatch.setenv("RECSYS_SERVE_PORT", "9001")
    monkeypatch.setenv("RECSYS_AB_CHALLENGER_SHARE", "0.25")
    monkeypatch.setenv("RECSYS_REDIS_URL", "redis://127.0.0.1:6379/9")
    monkeypatch.setenv("RECSYS_SERVE_ACCESS_LOG", "off")
    settings = ServiceConfig.from_env(port=9002)
    assert (settings.port, settings.challenger_share) == (9002, 0.25)
    assert settings.redis_url == "redis://127.0.0.1:6379/9"
    assert settings.access_log is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RECSYS_AB_CHALLENGER_SHARE", "1.5", "the challenger share must lie in [0, 1], got 1.5"),
        ("RECSYS_SERVE_PORT", "http", "RECSYS_SERVE_PORT must be an integer, got 'http'"),
        ("RECSYS_SERVE_POLL_SECONDS", "0", "the poll interval must be positive, got 0.0"),
        ("RECSYS_SERVE_MAX_BATCH", "0", "the batch size must be at least 1, got 0 (RECSYS_SERVE_"),
        ("RECSYS_SERVE_MAX_BATCH", "many", "RECSYS_SERVE_MAX_BATCH must be an integer, got 'many'"),
    ],
)
def test_unusable_settings_stop_the_command_with_one_line(
    monkeypatch, capsys, variable, value, message
):
    from recsys.cli import main

    monkeypatch.setenv(variable, value)
    assert main(["serve", "--model", MODEL]) == 2
    assert message in capsys.readouterr().err


def test_a_forgotten_user_is_answered_as_a_stranger_even_from_the_cache(store, prefix, tmp_path):
    """Regression: the service answered through its own online path, which did not
    consult the forgotten-users list, so a forgotten user kept getting personal lists."""
    from recsys.data.forgotten import ForgottenUsers

    user = store.users[1]
    recs = batch_lists(store, 1, [user])
    cache.write_batch(recs, MODEL, 1, REDIS_URL, prefix=prefix)
    client, holder = _app(store, prefix=prefix)
    with client:
        assert client.get(f"/recommendations/{user}").json()["served_by"] == "batch"
        online = holder.get("champion").online
        online.served.forgotten = ForgottenUsers(tmp_path / "privacy")
        online.served.forgotten.add(user, at=0.0)
        body = client.get(f"/recommendations/{user}").json()
    assert body["served_by"] not in ("batch", "model")  # the cold-start chain
