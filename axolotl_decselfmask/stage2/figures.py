"""``evaluate``'s pictures of a task (:func:`.outputs.figure_paths` names the files): its confusion
matrix, and its reliability diagram (how often the decision is right against how sure it was).

Drawn with matplotlib, imported only here and only when a picture is drawn (captum, a dependency
of the plugin, requires it; so does the ``experiments`` extra): without it, :func:`draw_task_figures` draws nothing and
says which extra brings it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

#: bins of the reliability diagram, over the confidence (the highest posterior) from 0 to 1
BINS = 10
EXTRA = "experiments"


def can_draw() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def missing_message() -> str:
    return (f"decselfmask evaluate: matplotlib is not installed, so no pictures (metrics.json is written): "
            f"pip install -e '.[{EXTRA}]' in a checkout (or the wheel's path with [{EXTRA}]) draws them")


def reliability(confidence, correct, bins: int = BINS) -> list[dict]:
    """Per confidence bin ``[lo, hi)`` (the last bin closed): ``n`` decisions, their mean
    ``confidence`` and ``accuracy`` (None for an empty bin)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                    "confidence": float(confidence[inside].mean()) if n else None,
                    "accuracy": float(correct[inside].mean()) if n else None})
    return out


def expected_calibration_error(table: list[dict]) -> float:
    """The mean over decisions of |accuracy - confidence| of their bin."""
    total = sum(b["n"] for b in table)
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in table if b["n"]) / max(total, 1))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def draw_confusion(path: Path, title: str, matrices: list[tuple[str, list[str], list[list[int]]]]) -> Path:
    """One panel per ``(name, labels, matrix)`` (rows gold, columns predicted), with the counts."""
    plt = _pyplot()
    size = max(len(m[1]) for m in matrices)
    fig, axes = plt.subplots(1, len(matrices), figsize=(1.2 + 0.9 * size * len(matrices), 1.4 + 0.8 * size),
                             squeeze=False)
    for ax, (name, labels, matrix) in zip(axes[0], matrices):
        values = np.asarray(matrix, dtype=float)
        ax.imshow(values, cmap="Blues")
        for i in range(len(labels)):
            for j in range(len(labels)):
                dark = values[i, j] > values.max() / 2
                ax.text(j, i, str(int(values[i, j])), ha="center", va="center", color="white" if dark else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_reliability(path: Path, title: str, table: list[dict]) -> Path:
    """Accuracy against confidence per bin (bars), the diagonal of a perfectly calibrated decision,
    and each bin's count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    centres = [(b["lo"] + b["hi"]) / 2 for b in table]
    width = table[0]["hi"] - table[0]["lo"]
    ax.bar(centres, [b["accuracy"] or 0.0 for b in table], width=width * 0.9, color="#4878a8", label="accuracy")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="calibrated")
    for c, b in zip(centres, table):
        if b["n"]:
            ax.text(c, (b["accuracy"] or 0.0) + 0.02, str(b["n"]), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("confidence (highest calibrated posterior)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {expected_calibration_error(table):.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
