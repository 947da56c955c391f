"""The paths a user takes, taken as the user takes them.

One store holds the deployment's data (integer ids, items and users tables,
timestamps) and a user's own CSV (string ids, no side tables, no timestamps,
implicit counts in the hundreds of thousands). Both are trained with the
``recsys`` command; the champions are then used through MLflow's own clients.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main

FAST = "popularity,ease"


def _csv(path: Path, seed: int = 0) -> Path:
    """A shop's export: string ids, counts up to 300k, no time, no items table."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 150, 4000)
    items = rng.zipf(1.4, 4000) % 90
    frame = pd.DataFrame({"u": [f"user{u}" for u in users], "i": [f"sku-{i}" for i in items]})
    frame = frame.drop_duplicates().assign(w=lambda f: rng.integers(1, 300_000, len(f)))
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paths")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_HOME", str(tmp / "home"))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        mp.setenv("RECSYS_ARTIFACT_ROOT", (tmp / "artifacts").as_uri())
        demo = tmp / "demo"
        mp.setenv("RECSYS_DATA_PATH", str(demo))
        assert (
            main(
                [
                    "generate",
                    "--users",
                    "150",
                    "--items",
                    "80",
                    "--interactions",
                    "4000",
                    "--out",
                    str(demo),
                ]
            )
            == 0
        )
        assert main(["train", str(demo), "--models", FAST, "--run-key", "demo-1"]) == 0
        other = _csv(tmp / "other.csv")
        assert (
            main(
                [
                    "train",
                    str(other),
                    "--user-col",
                    "u",
                    "--item-col",
                    "i",
                    "--rating-col",
                    "w",
                    "--models",
                    FAST,
                    "--run-key",
                    "other-1",
                ]
            )
            == 0
        )
        yield {"tmp": tmp, "demo": demo, "other": other}


def test_each_data_set_gets_its_own_registered_model_and_champion(store):
    from recsys import registry

    demo, other = registry.get_champion("recsys"), registry.get_champion("recsys-other")
    assert demo["version"] == 1 and other["version"] == 1
    decision = json.loads((store["tmp"] / "home/runs/other-1/decision.json").read_text())
    assert decision["registered_model"] == "recsys-other"
    assert decision["kind"] == "first_run"  # never scored against the demo's champion
    assert demo["run_tags"]["recsys.registered_model"] == "recsys"


def test_status_is_scoped_to_one_model_and_names_the_others(store, capsys):
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("champion: recsys version 1")
    assert "other registered models: recsys-other (champion v1)" in out
    assert main(["status", "--model", "recsys-other"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("champion: recsys-other version 1")
    assert "runs/other-1/recommendations.parquet" in out


def test_data_without_timestamps_says_what_split_it_used(store):
    split = json.loads((store["tmp"] / "home/runs/other-1/split.json").read_text())
    assert (split["protocol_requested"], split["protocol"]) == ("temporal", "random")
    assert "no timestamps" in split["notes"][0]


def test_the_champion_answers_any_id_type_through_mlflow_pyfunc(store):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/recsys@champion")
    out = model.predict(pd.DataFrame({"user_id": ["5", 5, "new-7"]}), params={"k": 3})
    by_user = {u: g for u, g in out.groupby(out["user_id"].astype(str) + type_tag(out))}
    as_text, as_int = by_user["5|str"], by_user["5|int"]
    assert list(as_text["item_id"]) == list(as_int["item_id"])
    assert set(as_text["served_by"]) == {"model"}
    assert set(by_user["new-7|str"]["served_by"]) <= {
        "global",
        "segment:age_gender",
        "segment:occupation",
    }
    strings = mlflow.pyfunc.load_model("models:/recsys-other@champion")
    out = strings.predict(pd.DataFrame({"user_id": ["user5", 12345]}), params={"k": 2})
    assert out.groupby("user_id").size().to_dict() == {"user5": 2, 12345: 2}
    assert out.loc[out["user_id"] == "user5", "served_by"].eq("model").all()


def type_tag(frame: pd.DataFrame) -> pd.Series:
    return frame["user_id"].map(lambda v: "|str" if isinstance(v, str) else "|int")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_mlflow_models_serve_answers_string_ids_over_http(store):
    import mlflow.pyfunc

    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [
            f"{bin_dir}/mlflow",
            "models",
            "serve",
            "-m",
            "models:/recsys@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server)
        body = {
            "dataframe_split": {"columns": ["user_id"], "data": [["5"], ["nobody-123"]]},
            "params": {"k": 4},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            served = pd.DataFrame(json.loads(answer.read())["predictions"])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    local = mlflow.pyfunc.load_model("models:/recsys@champion").predict(
        pd.DataFrame({"user_id": ["5", "nobody-123"]}), params={"k": 4}
    )
    assert served[["user_id", "item_id", "rank", "served_by"]].to_dict("records") == local[
        ["user_id", "item_id", "rank", "served_by"]
    ].to_dict("records")
    assert served.groupby("user_id").size().to_dict() == {"5": 4, "nobody-123": 4}


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(server.stdout.read().decode()[-3000:])
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout}s")


def test_train_prints_a_short_summary_and_json_on_request(store, capsys):
    assert (
        main(
            [
                "train",
                str(store["other"]),
                "--user-col",
                "u",
                "--item-col",
                "i",
                "--models",
                "popularity",
                "--run-key",
                "other-2",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("trained 1 models on ") and "split: random" in lines[0]
    assert any(line.startswith("decision: ") for line in lines)
    assert "registered model: recsys-other" in captured.out
    assert lines[-1].startswith("next: recsys recommend --model recsys-other --user <id>")
    assert len(lines) < 15 and "Downloading" not in captured.err
    assert "train popularity (1/1): done in" in captured.err  # progress, as it goes
    assert (
        main(
            [
                "train",
                str(store["other"]),
                "--user-col",
                "u",
                "--item-col",
                "i",
                "--models",
                "popularity",
                "--run-key",
                "other-3",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["registered_model"] == "recsys-other"


def test_a_champion_of_another_catalogue_is_replaced_and_the_gate_says_why(store, capsys):
    # The user points the other data set at the demo's registered model by name.
    assert (
        main(
            [
                "train",
                str(store["other"]),
                "--user-col",
                "u",
                "--item-col",
                "i",
                "--models",
                "popularity",
                "--model-name",
                "recsys",
                "--run-key",
                "mixed",
            ]
        )
        == 0
    )
    decision = json.loads((store["tmp"] / "home/runs/mixed/decision.json").read_text())
    assert decision["kind"] == "replace_incomparable" and decision["promote"]
    assert (
        "champion v1 cannot be compared: it was trained on another catalogue"
        in (decision["reason"])
    )
    from recsys import registry

    registry.rollback("recsys", reason="the demo's model belongs to the demo")
    assert registry.get_champion("recsys")["version"] == 1


def test_recommend_follows_the_alias_and_shows_titles(store, capsys):
    from recsys import registry
    from recsys.registry.snapshot import champion_version

    assert champion_version("recsys") == registry.get_champion("recsys")["version"]
    assert main(["recommend", "--user", "5", "--k", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("recsys version 1 (")
    assert out[1].split() == ["item_id", "title", "score", "rank", "served_by"]
    other_run = registry.get_champion("recsys-other")["run_id"]
    version = registry.register_model(other_run, "recsys")
    registry.promote_manually(version, "try the other catalogue's model", "recsys")
    assert main(["recommend", "--user", "user5", "--k", "2", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    # No run wrote batch lists with this version: the model itself answers.
    assert [r["served_by"] for r in records] == ["model", "model"]
    registry.rollback("recsys", reason="back to the demo's")
    assert main(["recommend", "--user", "5", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recsys version 1 (")
    assert out.count(" batch") == 3  # the demo run's batch lists answer a known user


def test_every_model_fits_a_file_without_side_tables_or_timestamps(store):
    from recsys.models import available_models
    from recsys.pipeline.benchmark import run_benchmark

    quick = {
        "attention": {"epochs": 2, "max_len": 20},
        "ranker": {"n_bags": 1, "n_folds": 1, "max_rounds": 20},
        "spark_als": {"factors": 8, "iterations": 5},
    }
    report = run_benchmark(
        str(store["other"]),
        protocol="loo",
        models=available_models(),
        columns={"user_col": "u", "item_col": "i", "rating_col": "w"},
        model_params=quick,
        cold_users=False,
    )
    assert report["protocol"] == "random"  # loo needs time; the data has none
    for name in available_models():
        assert np.isfinite(report["results"][name]["ndcg@10"]), name


def test_a_missing_column_names_the_flags_and_a_bad_path_names_format(tmp_path, capsys):
    data = tmp_path / "shop.csv"
    data.write_text("customer,product\n1,10\n2,11\n")
    assert main(["validate", str(data)]) == 1
    err = capsys.readouterr().err
    assert "--user-col" in err and "--item-col" in err and "fmt=" not in err
    blob = tmp_path / "export.bin"
    blob.write_text("a,b\n")
    assert main(["train", str(blob)]) == 2
    err = capsys.readouterr().err
    assert "--format" in err and "fmt=" not in err and "Traceback" not in err


def test_a_file_whose_extension_says_nothing_is_read_with_the_given_separator(tmp_path):
    from recsys.data.loaders import load_dataset

    data = tmp_path / "ratings_export.dat"
    data.write_text("1::10::4::978300760\n2::11::5::978302109\n")
    frame = pd.read_csv(data, sep="::", engine="python", header=None)
    frame.columns = ["u", "i", "r", "t"]
    named = tmp_path / "export.txt"
    frame.to_csv(named, sep="|", index=False)
    dataset = load_dataset(named, sep="|", user_col="u", item_col="i", rating_col="r", time_col="t")
    assert dataset.interactions["item_id"].tolist() == [10, 11]
    plain = tmp_path / "events"
    frame.to_csv(plain, sep=";", index=False)
    assert len(load_dataset(plain, sep=";", user_col="u", item_col="i").interactions) == 2


def test_an_unexpected_error_is_one_line_and_exit_3(monkeypatch, capsys):
    import recsys.cli as cli

    def broken(args):
        raise NotImplementedError("adding a nonzero scalar to a sparse array")

    monkeypatch.setitem(cli.COMMANDS, "status", broken)
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert "unexpected error: NotImplementedError" in err and "Traceback" not in err


def test_every_flag_has_help_and_says_its_default():
    from recsys.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    for name, sub in commands.items():
        for action in sub._actions:  # noqa: SLF001
            if action.dest == "help":
                continue
            assert action.help, f"recsys {name} {action.option_strings or action.dest}"
        text = sub.format_help()
        for action in sub._actions:  # noqa: SLF001
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
