"""Every command of the README's CLI and registry sections, run exactly as written.

The blocks are read from README.md itself, so the README cannot drift from
what works. They run in a scratch checkout (the real ``.venv`` and
``../shared`` linked in) whose deployment data was trained first, the way
``make demo`` leaves a new user's machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of the README section titled ``section``."""
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def commands(block: str) -> list[str]:
    """One shell command per logical line (continuations joined, comments kept)."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readme")
    repo = tmp / "repo"
    repo.mkdir()
    (repo / ".venv").symlink_to(ROOT / ".venv")
    (tmp / "shared").symlink_to(ROOT.parent / "shared")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "MLFLOW_"))}
    env.update(
        RECSYS_HOME=str(repo / "var"),
        RECSYS_MLRUNS=str(repo / "mlruns"),
        RECSYS_DATA_PATH=str(repo / "var/data/demo"),
        PYTHONPATH=str(ROOT),
    )
    run(
        f"{sys.executable} -m recsys.cli generate --users 300 --items 150 "
        f"--interactions 6000 --out var/data/demo",
        repo,
        env,
    )
    run(f"{sys.executable} -m recsys.cli train var/data/demo --models popularity,ease", repo, env)
    return repo, env


def run(command: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_cli_section_runs_as_written(checkout):
    repo, env = checkout
    (cli,) = blocks("The CLI", "bash")
    said = {}
    for command in commands(cli):
        said[command.split("#")[0].strip()] = run(command, repo, env)
    train = next(out for cmd, out in said.items() if " train " in cmd)
    assert "registered model: recsys-synth" in train and "decision: " in train
    onboarding = next(out for cmd, out in said.items() if "--liked-genres" in cmd)
    assert "onboarding" in onboarding
    assert '"served_by"' in next(out for cmd, out in said.items() if "--json" in cmd)
    assert "other registered models: recsys-synth" in next(
        out for cmd, out in said.items() if cmd.endswith(" status")
    )


def test_the_registry_section_runs_as_written(checkout):
    repo, env = checkout
    (python,) = blocks("The champion, from anything that speaks MLflow", "python")
    out = run(f"{sys.executable} - <<'EOF'\n{python}EOF", repo, env)
    assert "served_by" in out and "new-7" in out
    (serve,) = blocks("The champion, from anything that speaks MLflow", "bash")
    answer = run(f"set -e\n{serve}\nkill %1; wait || true", repo, env)
    assert '"predictions"' in answer and '"new-7"' in answer


def test_the_service_section_runs_as_written(checkout):
    repo, env = checkout
    (serve,) = blocks("The recommendation service", "bash")
    out = run(f"set -e\n{serve}\nkill %1; wait || true", repo, env)
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    known, filtered, folded, similar = answers
    assert (known["served_by"], known["variant"], len(known["items"])) == ("model", "champion", 5)
    assert not {50, 100} & {entry["item_id"] for entry in filtered["items"]}
    assert (folded["served_by"], folded["folded_in"]) == ("model", 3)
    assert similar["item_id"] == 1 and len(similar["items"]) == 5
    assert (
        'recsys_requests_total{method="GET",route="/recommendations/{user_id}",status="200"} 2.0'
        in out
    )
