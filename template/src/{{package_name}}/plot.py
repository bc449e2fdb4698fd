"""Draws a run's metrics.csv: the losses, the other validation metrics, the learning rate and the
iteration time, one panel each."""

from __future__ import annotations

import csv
import math
from pathlib import Path

# Each panel shows the columns whose names start with one of its prefixes, except those of an
# earlier panel: the validation panel holds accuracy, F1, bits per character and the like.
PANELS = {
    "loss": ("train/loss", "val/loss"),
    "validation metrics": ("val/",),
    "learning rate": ("lr-",),
    "iteration time (ms)": ("time/",),
}


def read_metrics(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Each column of ``metrics.csv`` as (steps, values), skipping empty cells."""
    columns: dict[str, tuple[list[int], list[float]]] = {}
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            step = int(row["step"])
            for name, text in row.items():
                if name != "step" and text not in ("", None):
                    steps, values = columns.setdefault(name, ([], []))
                    steps.append(step)
                    values.append(float(text))
    return columns


def panels(columns: dict[str, tuple[list[int], list[float]]]) -> dict[str, list[str]]:
    """The columns each panel draws: those with a finite value, each in the first panel that takes it."""
    drawn: set[str] = set()
    result: dict[str, list[str]] = {}
    for title, prefixes in PANELS.items():
        names = [
            name
            for name, (_, values) in columns.items()
            if name.startswith(prefixes) and name not in drawn and any(math.isfinite(v) for v in values)
        ]
        drawn.update(names)
        result[title] = names
    return result


def plot(run_dir: Path, output: Path | None = None) -> Path:
    """Write the plot of ``run_dir/metrics.csv`` to ``output`` (default ``run_dir/metrics.png``).

    Raises:
        FileNotFoundError: the run has no metrics.csv.
        ImportError: matplotlib is not installed; the message says how to install it.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist; is {str(run_dir)!r} a run directory with the csv logger on?"
        )
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "plot needs matplotlib; install it with: pip install matplotlib (or this project's [plot] extra)"
        ) from None
    columns = read_metrics(path)
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(8, 3 * len(PANELS)), sharex=True)
    for ax, (title, names) in zip(axes, panels(columns).items(), strict=True):
        for name in names:
            steps, values = columns[name]
            ax.plot(steps, values, label=name, marker="o" if len(steps) < 20 else None)
        ax.set_title(title)
        if ax.has_data():
            ax.legend(loc="best", fontsize="small")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if axes[0].has_data():
        axes[0].set_yscale("log")
    axes[-1].set_xlabel("optimizer step")
    figure.tight_layout()
    output = Path(output) if output is not None else Path(run_dir) / "metrics.png"
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
