"""The plots of a grid: ``methods.png`` (mean Macro F1 per method with its bootstrap 95% interval,
else the std over seeds; the seeds as dots), ``tasks_decselfmask_vs_sft.png`` (one dot per task)
and ``tasks_minus_sft.png`` (each method minus sft per task, one dot per task)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from axolotl_decselfmask.tools.experiments.methods import BASELINE
from axolotl_decselfmask.tools.experiments.results import summarise


def save_figure(fig, path: Path) -> None:
    """``fig`` as the PNG ``path``, through a temporary file and a rename (a picture on disk is whole)."""
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def _methods_plot(plt, rows: list[dict], s: dict, out: Path, boot: dict | None = None) -> None:
    methods = s["methods"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    means = [s["summary"][m]["mean"] for m in methods]
    scope = (boot or {}).get("scopes", {}).get("all", {}).get("methods", {})
    if all(m in scope for m in methods):  # the bootstrap interval around the mean
        err = np.array([[max(means[i] - scope[m]["low"], 0), max(scope[m]["high"] - means[i], 0)]
                        for i, m in enumerate(methods)]).T
        what = "bar = 95% bootstrap interval"
    else:
        err, what = [s["summary"][m]["std"] for m in methods], "bar = std over seeds"
    colors = ["#c44e52" if m == "decselfmask" else "#4c72b0" if m == BASELINE else "#8c8c8c" for m in methods]
    ax.bar(range(len(methods)), means, yerr=err, capsize=4, color=colors)
    for i, m in enumerate(methods):  # the seeds themselves
        seeds = sorted({r["seed"] for r in rows if r["method"] == m})
        vals = [np.mean([r["macro_f1"] for r in rows if r["method"] == m and r["seed"] == sd]) for sd in seeds]
        ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
    ax.set_ylabel("Macro F1 (mean over tasks)")
    ax.set_title(f"Methods: mean over tasks and seeds, {what}, dots = seeds", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out / "methods.png")
    plt.close(fig)


def _tasks_plot(plt, s: dict, out: Path) -> None:
    pts = [(s["per_task"][(c, t, BASELINE)], s["per_task"][(c, t, "decselfmask")], c)
           for c, t in s["tasks"] if (c, t, BASELINE) in s["per_task"] and (c, t, "decselfmask") in s["per_task"]]
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for corpus in sorted({p[2] for p in pts}):
        xs = [p[0] for p in pts if p[2] == corpus]
        ys = [p[1] for p in pts if p[2] == corpus]
        ax.scatter(xs, ys, label=corpus, s=28)
    hi = max([max(p[0], p[1]) for p in pts] + [0.1]) * 1.05
    ax.plot([0, hi], [0, hi], color="gray", linewidth=1, linestyle="--")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("sft Macro F1")
    ax.set_ylabel("decselfmask Macro F1")
    ax.set_title("Per task, mean over seeds\n(above the line: DecSelfMask wins)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "tasks_decselfmask_vs_sft.png")
    plt.close(fig)


def _minus_sft_plot(plt, s: dict, out: Path) -> None:
    """Each method minus sft, per task (mean over seeds): one column per method, one dot per task."""
    others = [m for m in s["methods"] if m != BASELINE]
    corpora = sorted({c for c, _ in s["tasks"]})
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(others) + 2), 3.8))
    for k, corpus in enumerate(corpora):
        for i, m in enumerate(others):
            d = [s["per_task"][(c, t, m)] - s["per_task"][(c, t, BASELINE)] for c, t in s["tasks"]
                 if c == corpus and (c, t, m) in s["per_task"] and (c, t, BASELINE) in s["per_task"]]
            x = i + (k - (len(corpora) - 1) / 2) * 0.18 + np.linspace(-0.05, 0.05, len(d))
            ax.scatter(x, d, s=14, color=f"C{k}", label=corpus if i == 0 else None)
            if d:
                ax.plot([i - 0.3, i + 0.3], [float(np.mean(d))] * 2, color="black", linewidth=1)
    ax.axhline(0, color="gray", linewidth=1, linestyle="--")
    ax.set_xticks(range(len(others)), others, rotation=20, ha="right")
    ax.set_ylabel("Macro F1 minus sft")
    ax.set_title("Per task, mean over seeds (line: mean over tasks)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "tasks_minus_sft.png")
    plt.close(fig)


def plot(rows: list[dict], out: Path, boot: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(rows)
    _methods_plot(plt, rows, s, out, boot)
    if BASELINE in s["methods"] and "decselfmask" in s["methods"]:
        _tasks_plot(plt, s, out)
    if BASELINE in s["methods"] and len(s["methods"]) > 1:
        _minus_sft_plot(plt, s, out)
