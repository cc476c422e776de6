"""``results.md``: the methods against sft, over seeds and per task; and :func:`write_results`,
which writes the three outputs of a grid (``results.csv``, ``results.md``, the plots)."""

from __future__ import annotations

from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_text
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import BASELINE
from axolotl_decselfmask.tools.experiments.plots import plot
from axolotl_decselfmask.tools.experiments.results import summarise, write_csv

NOTES = ["", ("`zero_shot` trains nothing and every seed shares its test split: it is evaluated once and its "
               "result stands for every seed (spread 0)."),
         "", ("Probing is the frozen model before stage 2: the base model for `sft`, the stage-1 model for "
              "the stage-1 methods."), ""]


def _method_line(s: dict, m: str) -> str:
    v = s["summary"][m]
    base = s["summary"].get(BASELINE)
    diff = f"{v['mean'] - base['mean']:+.4f}" if base and m != BASELINE else ""
    wins = ""
    if base and m != BASELINE:
        won = sum(s["per_task"].get((c, t, m), -1) > s["per_task"].get((c, t, BASELINE), 2) for c, t in s["tasks"])
        compared = sum((c, t, m) in s["per_task"] and (c, t, BASELINE) in s["per_task"] for c, t in s["tasks"])
        wins = f"{won}/{compared}"
    probe = f"{v['probe']:.4f}" if v["probe"] is not None else ""
    return f"| {m} | {v['mean']:.4f} +- {v['std']:.4f} (n={v['n_seeds']}) | {diff} | {wins} | {probe} |"


def _per_task_lines(s: dict) -> list[str]:
    lines = ["", "Per task (mean Macro F1 over seeds):", "",
             "| corpus | task | " + " | ".join(s["methods"]) + " |",
             "| --- | --- | " + " | ".join("---" for _ in s["methods"]) + " |"]
    for c, t in s["tasks"]:
        cells = [f"{s['per_task'][(c, t, m)]:.4f}" if (c, t, m) in s["per_task"] else "" for m in s["methods"]]
        lines.append(f"| {c} | {t} | " + " | ".join(cells) + " |")
    return lines


def report_markdown(rows: list[dict], grid: Grid | None = None, elapsed: float | None = None) -> str:
    if not rows:
        return "# Results\n\nNo finished runs yet.\n"
    s = summarise(rows)
    lines = ["# Results", ""]
    lines.append(f"{len(rows)} results (rows of results.csv) over {len(s['tasks'])} tasks; Macro F1 is the mean over "
                 "tasks of one seed, then mean +- standard deviation over seeds.")
    if elapsed is not None:
        lines.append(f"Wall time of this invocation: {elapsed / 60:.1f} min.")
    lines += ["", "| method | Macro F1 (mean +- std over seeds) | vs sft | tasks won vs sft | probing Macro F1 |",
              "| --- | --- | --- | --- | --- |"]
    lines += [_method_line(s, m) for m in s["methods"]]
    return "\n".join(lines + _per_task_lines(s) + NOTES)


def write_results(out: Path, rows: list[dict], grid: Grid | None = None, elapsed: float | None = None) -> None:
    write_csv(out, rows)
    atomic_write_text(out / "results.md", report_markdown(rows, grid, elapsed))
    if rows:
        plot(rows, out)
