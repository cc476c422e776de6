"""Draw docs/img/pipeline.png: the DecSelfMask pipeline as the plugin runs it.

    python docs/figures/pipeline.py            # writes docs/img/pipeline.png
    python docs/figures/pipeline.py --out x.png

Needs matplotlib only. The toy relevance curve in the second box is made up for the picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "img" / "pipeline.png"

ORANGE, BLUE, GREY, GREEN = "#f28e2b", "#4e79a7", "#6b6b6b", "#59a14f"


def box(ax, x, y, w, h, title, body, colour):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                linewidth=1.6, edgecolor=colour, facecolor="white"))
    ax.text(x + w / 2, y + h - 0.16, title, ha="center", va="top", fontsize=10.5, weight="bold", color=colour)
    ax.text(x + w / 2, y + h - 0.48, body, ha="center", va="top", fontsize=8.3, color="#222222", linespacing=1.35)


def arrow(ax, a, b, colour=GREY):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=14, linewidth=1.4, color=colour))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    fig, ax = plt.subplots(figsize=(12.5, 5.6), dpi=110)
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 5.6)
    ax.axis("off")

    # lane labels
    ax.text(0.1, 5.35, "axolotl preprocess recipe.yml  (no labels used)", fontsize=10, color=GREY, style="italic")
    ax.text(0.1, 2.25, "axolotl train recipe.yml", fontsize=10, color=GREY, style="italic")

    w, h, y1 = 2.75, 2.2, 2.85
    xs = [0.1, 3.2, 6.3, 9.4]
    box(ax, xs[0], y1, w, h, "1  Unlabelled notes",
        "jsonl / csv / parquet / HF dataset\n+ task items, e.g.\n\"Presence of pacemaker\"\n(or the label names)", GREY)
    box(ax, xs[1], y1, w, h, "2  Self-relevance",
        "user: note + lead-in question\nassistant: the task item\nrelevance = embedding x gradient\nof the item's log-probability", ORANGE)
    box(ax, xs[2], y1, w, h, "3  Spans",
        "|r| / max, Gaussian smoothing,\nhysteresis: a peak > 0.4 grows\nwhile > 0.2, widened to words", BLUE)
    box(ax, xs[3], y1, w, h, "4  Masked examples",
        "each span -> one <mask>\nuser: the masked note\nassistant: the span's words\n(cached, resumable)", BLUE)
    for a, b in zip(xs, xs[1:]):
        arrow(ax, (a + w + 0.03, y1 + h / 2), (b - 0.03, y1 + h / 2))

    # toy relevance curve inside box 2 and its spans inside box 3
    t = np.linspace(0, 1, 60)
    r = 0.15 + 0.8 * np.exp(-((t - 0.3) / 0.06) ** 2) + 0.45 * np.exp(-((t - 0.75) / 0.05) ** 2)
    r = r / r.max()
    for x0, colour in ((xs[1], ORANGE), (xs[2], BLUE)):
        px, py = x0 + 0.3 + t * (w - 0.6), y1 + 0.15 + r * 0.55
        ax.plot(px, py, color=colour, linewidth=1.3)
        if colour == BLUE:
            for level, style in ((0.4, "--"), (0.2, ":")):
                ax.plot([px[0], px[-1]], [y1 + 0.15 + level * 0.55] * 2, style, color=GREY, linewidth=0.8)
            inside = r > 0.2
            edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(int), 0]))
            for s, e in zip(edges[::2], edges[1::2]):
                if r[s:e].max() > 0.4:
                    ax.axvspan(px[s], px[e - 1], ymin=(y1 + 0.12) / 5.6, ymax=(y1 + 0.75) / 5.6, color=BLUE, alpha=0.18)

    y2, h2 = 0.25, 1.75
    box(ax, xs[0], y2, w, h2, "5  Stage 1",
        "Axolotl trains next-token\nprediction on the masked\nexamples (LoRA, QLoRA or full)\n-> output_dir", GREEN)
    box(ax, xs[1], y2, w, h2, "6  Stage 2",
        "TRL SFTTrainer, fresh LoRA\n(r 32, alpha 64, lr 3e-4) on the\nmerged stage-1 model, a few\nlabelled notes -> stage2/", GREEN)
    box(ax, xs[2], y2, w, h2, "7  Evaluation",
        "score every label option as\nthe answer, pick the likeliest\n(constrained scoring)\nMacro F1, accuracy", GREEN)
    box(ax, xs[3], y2, w, h2, "Outputs",
        "metrics.json\npredictions-<task>.jsonl\nREADME.md (model card)\nexamples.jsonl + inspector", GREY)
    for a, b in zip(xs, xs[1:]):
        arrow(ax, (a + w + 0.03, y2 + h2 / 2), (b - 0.03, y2 + h2 / 2))
    # from the examples down to stage 1
    arrow(ax, (xs[3] + w / 2, y1 - 0.03), (xs[0] + w / 2 + 0.6, y2 + h2 + 0.03))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, bbox_inches="tight", facecolor="white")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
