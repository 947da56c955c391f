"""What a run draws and tabulates for people: the leaderboard and each model's own plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from recsys.pipeline import runfolder as rf
from recsys.pipeline.runfolder import RunFolder

#: Leaderboard columns besides the primary metric (served basis, all test users).
LEADERBOARD_COLUMNS = (
    "catalogue_coverage",
    "novelty",
    "diversity",
    "avg_popularity",
    "gini",
    "long_tail_share",
)


def write_leaderboard(
    run: RunFolder, board: list[dict], champion: dict | None, primary: str
) -> dict[str, str]:
    """One Markdown table and one bar chart of every candidate and the champion.

    Every figure is on the served basis (all test users, as the gate compares).

    Returns:
        ``{"table": path, "chart": path}``.
    """
    rows = [{"model": c["model"], **c.get("served", c["metrics"])} for c in board]
    if champion is not None:
        rows.append(
            {
                "model": f"champion v{champion['version']} ({champion.get('model_type')})",
                **champion["metrics"],
            }
        )
    frame = pd.DataFrame(rows).set_index("model").apply(pd.to_numeric, errors="coerce")
    columns = [
        c for c in (primary, *LEADERBOARD_COLUMNS, f"fairness_gap.{primary}") if c in frame.columns
    ]
    table = run.file(rf.LEADERBOARD_TABLE)
    table.write_text(markdown_table(frame[columns]) + "\n")
    chart = run.file(rf.LEADERBOARD_CHART)
    _bar_chart(frame[primary], primary, chart)
    return {"table": str(table), "chart": str(chart)}


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of numbers as a Markdown table, its index as the first column."""
    lines = [
        "| model | " + " | ".join(frame.columns) + " |",
        "|---" * (len(frame.columns) + 1) + "|",
    ]
    lines += [
        f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |"
        for name, row in zip(frame.index, frame.to_numpy(), strict=True)
    ]
    return "\n".join(lines)


def _bar_chart(values: pd.Series, label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 * len(values) + 1.2))
    ax.barh(list(values.index), values.to_numpy(), color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.set_title("Candidates and champion on this run's test split")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_plots(model: Any, folder: Path) -> dict[str, Path]:
    """Write the figures a model draws of itself (:meth:`Recommender.figures`) as PNGs.

    Returns:
        ``{"plots": folder}`` when the model drew anything, else ``{}``.
    """
    figures = model.figures()
    if not figures:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(figure)
    return {"plots": folder}
