"""``results.md``: the methods against sft, over seeds and per task; and :func:`write_results`,
which writes the three outputs of a grid (``results.csv``, ``results.md``, the plots)."""

from __future__ import annotations

from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_json, atomic_write_text
from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE, bootstrap
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import BASELINE, METHODS
from axolotl_decselfmask.tools.experiments.plots import plot
from axolotl_decselfmask.tools.experiments.predictions import head_records, string_match_records
from axolotl_decselfmask.tools.experiments.results import summarise, write_csv

NOTES = ["", ("`zero_shot` trains nothing and every seed shares its test split: it is evaluated once and its "
               "result stands for every seed (spread 0)."),
         "", ("Probing is the frozen model before stage 2: the base model for `sft`, the stage-1 model for "
              "the stage-1 methods."), ""]


def _ci(v: dict | None, sign: bool = False) -> str:
    if not v:
        return ""
    f = "+.4f" if sign else ".4f"
    return f" [{v['low']:{f}}, {v['high']:{f}}]"


def _wins(s: dict, m: str) -> str:
    if BASELINE not in s["summary"] or m == BASELINE:
        return ""
    won = sum(s["per_task"].get((c, t, m), -1) > s["per_task"].get((c, t, BASELINE), 2) for c, t in s["tasks"])
    compared = sum((c, t, m) in s["per_task"] and (c, t, BASELINE) in s["per_task"] for c, t in s["tasks"])
    return f"{won}/{compared}"


def _method_line(s: dict, m: str, scope: dict | None, seconds: dict) -> str:
    """One row of the methods table: Macro F1 [CI], seed spread, decselfmask minus it [CI] (``*``:
    the interval excludes zero), tasks won against sft, summed run seconds, probing."""
    v = s["summary"][m]
    ref = s["summary"].get(REFERENCE)
    diff = ""
    if scope and m in scope.get("difference", {}):
        d = scope["difference"][m]
        diff = f"{d['mean']:+.4f}{_ci(d, True)}{' *' if d['excludes_zero'] else ''}"
    elif ref and m != REFERENCE:
        diff = f"{ref['mean'] - v['mean']:+.4f}"
    ci = _ci(scope["methods"].get(m)) if scope else ""
    probe = f"{v['probe']:.4f}" if v["probe"] is not None else ""
    cost = f"{seconds[m]:.0f}" if m in seconds else ""
    return (f"| {m} | {v['mean']:.4f}{ci} | {v['std']:.4f} (n={v['n_seeds']}) | {diff} | {_wins(s, m)} | {cost} "
            f"| {probe} |")


def _corpus_lines(boot: dict, seconds: dict | None = None) -> list[str]:
    """The per-corpus table; ``seconds``: summed run seconds per (corpus, method), the cost
    within a corpus (a grid's runs share one setting of threads; corpora may not)."""
    corpora = [k for k in boot["scopes"] if k != "all"]
    if len(corpora) < 2 and "difference" not in boot["scopes"].get("all", {}):
        return []
    seconds = seconds or {}
    lines = ["", f"Per corpus (bootstrap within the corpus; {REFERENCE} minus the method):", "",
             f"| corpus | tasks | method | Macro F1 [95% CI] | {REFERENCE} minus this [95% CI] | run seconds (sum) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for c in corpora:
        sc = boot["scopes"][c]
        for m, v in sc["methods"].items():
            d = sc.get("difference", {}).get(m)
            cell = f"{d['mean']:+.4f}{_ci(d, True)}{' *' if d['excludes_zero'] else ''}" if d else ""
            cost = f"{seconds[c, m]:.0f}" if (c, m) in seconds else ""
            lines.append(f"| {c} | {sc['n_tasks']} | {m} | {v['mean']:.4f}{_ci(v)} | {cell} | {cost} |")
    return lines


# the paper's claims (Ferrazzi et al. 2026, over 136 tasks, 5 models): DecSelfMask minus each
# baseline in Macro F1 points; SetFit is the "what a practitioner would pick instead"
PAPER_CLAIMS = {"sft": 19.9, "synthetic_labels": 12.5, "continual_pretraining": 6.3}
ALTERNATIVES = ("setfit", "logreg_minilm")


def verdict(d: dict | None) -> str:
    """What a difference interval (``decselfmask`` minus a method, in Macro F1) says."""
    if not d:
        return "not in these runs"
    if d["low"] > 0:
        return "decselfmask better (interval above zero)"
    if d["high"] < 0:
        return "decselfmask worse (interval below zero)"
    return "undecided (interval includes zero)"


def claims_lines(boot: dict | None) -> list[str]:
    """The paper's claims and the few-label alternatives against the bootstrap (scope ``all``, and
    each corpus): the measured difference, its interval, and what it says; for a claim, whether the
    paper's size lies inside the interval."""
    if not boot or "all" not in boot["scopes"]:
        return []
    scopes = ["all"] + [k for k in boot["scopes"] if k != "all"]
    lines = ["", f"The paper's claims and the alternatives ({REFERENCE} minus the method, Macro F1 points; "
             "scope `all`: every corpus' tasks together):", "",
             "| method | paper | scope | here [95% CI] | what the interval says | paper's size in the interval |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in [*PAPER_CLAIMS, *ALTERNATIVES]:
        paper = PAPER_CLAIMS.get(m)
        for k in scopes:
            d = boot["scopes"][k].get("difference", {}).get(m)
            if d is None and k != "all":
                continue
            here = f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" if d else ""
            size = ("" if paper is None or not d else
                    "yes" if d["low"] <= paper / 100 <= d["high"] else "no")
            lines.append(f"| {m} | {'' if paper is None else f'+{paper}'} | {k} | {here} | {verdict(d)} | {size} |")
    return lines


# secondary contrasts (not the plan's decselfmask-minus statistic): how much of the paper's margin
# over SFT is the mask token (docs/results.md, "Second tier", item 2); (reference, method) pairs,
# each bootstrapped on the same draws as the main table (the draws depend on the notes and tasks only)
CONTRASTS = (("sft", "sft_mask_fill"), ("sft", "sft_options"))


def contrasts(records: list[dict], resamples: int = 10_000, seed: int = 0) -> dict:
    """``"<ref> minus <method>"`` -> scope -> ``{mean, low, high, excludes_zero}`` for each pair of
    :data:`CONTRASTS` whose two methods are both in ``records``."""
    have = {r["method"] for r in records}
    out = {}
    for ref, m in CONTRASTS:
        if ref in have and m in have:
            boot = bootstrap(records, [ref, m], resamples, seed, reference=ref)
            out[f"{ref} minus {m}"] = {k: sc["difference"][m] for k, sc in boot["scopes"].items()}
    return out


def contrast_lines(boot: dict | None) -> list[str]:
    """The secondary contrasts (:func:`contrasts`, in ``boot["contrasts"]``) as a table, in points."""
    if not boot or not boot.get("contrasts"):
        return []
    lines = ["", "Secondary contrasts (the mask token's share of the margin over SFT; Macro F1 points, the same "
             "resampling; not corrected for multiplicity):", "",
             "| contrast | scope | difference [95% CI] | interval excludes zero |", "| --- | --- | --- | --- |"]
    for name, scopes in boot["contrasts"].items():
        for k in ["all"] + [k for k in scopes if k != "all"]:
            d = scopes[k]
            lines.append(f"| {name} | {k} | {100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
                         f"| {'yes' if d['excludes_zero'] else 'no'} |")
    return lines


HEAD_STYLES = ("package", "authors")


def head_boot(records: list[dict], resamples: int = 10_000, seed: int = 0) -> dict:
    """Per probing head style (:data:`HEAD_STYLES`) the bootstrap of its Macro F1 per method, and of
    decselfmask's head minus each method's (the same resampling as the main table), from the
    predictions' ``heads`` (:func:`.predictions.head_records`); {} when no file has them."""
    heads = head_records(records)
    out = {}
    for style in HEAD_STYLES:
        names = [f"{m}:{style}_head" for m in METHODS if any(r["method"] == f"{m}:{style}_head" for r in heads)]
        if names:
            boot = bootstrap(heads, names, resamples, seed, reference=f"{REFERENCE}:{style}_head")
            out[style] = {k: {"methods": sc["methods"], "difference": sc.get("difference", {})}
                          for k, sc in boot["scopes"].items()}
    return out


def head_lines(boot: dict | None) -> list[str]:
    """The probing heads' table (scope ``all``: every corpus' tasks): per method each head's Macro F1
    [95% CI] and decselfmask's head minus it; nothing without heads in the predictions."""
    heads = (boot or {}).get("heads") or {}
    if not any("all" in h for h in heads.values()):
        return []
    styles = [s for s in HEAD_STYLES if "all" in heads.get(s, {})]
    lines = ["", "Heads on the frozen model before stage 2 (probing, argmax; the base model for `sft`, the stage-1 "
             "model for the stage-1 methods; `package`: this project's head, `authors`: the authors' head of "
             "`d_classification_head.sh`). Macro F1 [95% CI] and "
             f"{REFERENCE}'s head minus the method's [95% CI]:", "",
             "| method | " + " | ".join(f"{s} head | {REFERENCE} minus this" for s in styles) + " |",
             "| --- | " + " | ".join("--- | ---" for _ in styles) + " |"]
    for m in METHODS:
        cells, seen = [], False
        for s in styles:
            v = heads[s]["all"]["methods"].get(f"{m}:{s}_head")
            d = heads[s]["all"]["difference"].get(f"{m}:{s}_head")
            seen = seen or v is not None
            cells.append(f"{v['mean']:.4f}{_ci(v)}" if v else "")
            cells.append(f"{d['mean']:+.4f}{_ci(d, True)}{' *' if d['excludes_zero'] else ''}" if d else "")
        if seen:
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def string_match_boot(records: list[dict], resamples: int = 10_000, seed: int = 0) -> dict:
    """The authors' string-match scorer per method (``sm_*`` of the predictions,
    :func:`.predictions.string_match_records`): scope -> the bootstrap's ``methods`` and ``difference``
    of the mean over tasks (the same resampling as the main table; each task's Macro F1 over the
    classes present), and ``pooled`` (per method: one Macro F1 over every note of every task of a
    corpus and seed, the authors' pooling, averaged over those) and ``off_format`` (per method: the
    share of off-format answers over all its notes); {} when no file has them."""
    from sklearn.metrics import f1_score

    sm = string_match_records(records)
    if not sm:
        return {}
    methods = [m for m in METHODS if any(r["method"] == m for r in sm)]
    boot = bootstrap(sm, methods, resamples, seed)
    pooled: dict[str, list[float]] = {}
    off: dict[str, list[int]] = {}
    for rec in sm:
        gold = [y for line in rec["tasks"] for y in line["sm_gold"]]
        pred = [y for line in rec["tasks"] for y in line["sm_pred"]]
        pooled.setdefault(rec["method"], []).extend(
            [float(f1_score(gold, pred, average="macro", zero_division=0))] * len(rec["seeds"]))
        off.setdefault(rec["method"], []).extend(o for line in rec["tasks"] for o in line["sm_off"])
    return {"scopes": {k: {"methods": sc["methods"], "difference": sc.get("difference", {})}
                       for k, sc in boot["scopes"].items()},
            "pooled": {m: sum(v) / len(v) for m, v in pooled.items()},
            "off_format": {m: sum(v) / len(v) for m, v in off.items()}}


def string_match_lines(boot: dict | None, s: dict | None = None) -> list[str]:
    """The authors' scorer beside the options (scope ``all``): per method the option scoring's Macro
    F1, the string-match Macro F1 (mean of tasks [95% CI], and pooled), decselfmask minus the method
    under string match [95% CI], and the share of off-format answers; nothing without ``sm_*`` fields."""
    sm = (boot or {}).get("string_match") or {}
    if "all" not in sm.get("scopes", {}):
        return []
    scope = sm["scopes"]["all"]
    lines = ["", "The authors' scorer (string match of the teacher-forced answer, docs/method.md) beside the "
             "option scoring, every corpus' tasks together:", "",
             f"| method | options Macro F1 | string-match Macro F1, mean of tasks [95% CI] | {REFERENCE} minus this, "
             "string match [95% CI] | string-match Macro F1, pooled | off-format answers |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m, v in scope["methods"].items():
        options = (s or {}).get("summary", {}).get(m)
        d = scope["difference"].get(m)
        diff = f"{d['mean']:+.4f}{_ci(d, True)}{' *' if d['excludes_zero'] else ''}" if d else ""
        lines.append(f"| {m} | {options['mean']:.4f} | " if options else f"| {m} |  | ")
        lines[-1] += (f"{v['mean']:.4f}{_ci(v)} | {diff} | {sm['pooled'].get(m, float('nan')):.4f} "
                      f"| {sm['off_format'].get(m, float('nan')):.3f} |")
    return lines


def precision_lines(records: list[dict] | None) -> list[str]:
    """What each method's runs computed in, as their predictions files record it (``dtype`` and the
    CPU kernels, ``cpu_capability``), with the number of files of each; nothing when no file records
    it (files written before it was recorded), so that such a report is unchanged."""
    if not records or not any(r.get("dtype") for r in records):
        return []
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        kernels = f"{r['cpu_capability']} kernels" if r.get("cpu_capability") else "kernels not recorded"
        label = f"{r['dtype']} ({kernels})" if r.get("dtype") else "not recorded"
        per = counts.setdefault(r["method"], {})
        per[label] = per.get(label, 0) + 1
    lines = ["", "Precision of each method's runs, as their predictions files record it (files: runs x seeds; "
             "`not recorded`: written before it was recorded, or a method that writes no environment):", ""]
    for m in [m for m in METHODS if m in counts] + sorted(set(counts) - set(METHODS)):
        lines.append(f"- {m}: " + ", ".join(f"{k} x{n}" for k, n in sorted(counts[m].items())))
    return lines


def _per_task_lines(s: dict) -> list[str]:
    lines = ["", "Per task (mean Macro F1 over seeds):", "",
             "| corpus | task | " + " | ".join(s["methods"]) + " |",
             "| --- | --- | " + " | ".join("---" for _ in s["methods"]) + " |"]
    for c, t in s["tasks"]:
        cells = [f"{s['per_task'][(c, t, m)]:.4f}" if (c, t, m) in s["per_task"] else "" for m in s["methods"]]
        lines.append(f"| {c} | {t} | " + " | ".join(cells) + " |")
    return lines


def _boot_note(boot: dict | None) -> list[str]:
    if not boot:
        return ["", "No per-note predictions for these rows: no bootstrap intervals (report recomputes them "
                "from the predictions folder, docs/experiments.md)."]
    return ["", (f"Intervals: paired bootstrap, {boot['resamples']:,} resamples (seed {boot['seed']}, "
                 f"{boot['seconds']:.1f} s): per corpus its test notes (jointly for the tasks that share them) "
                 "and its tasks drawn with replacement; each drawn task's Macro F1 on the drawn notes, averaged "
                 "over seeds, then over the drawn tasks of all corpora (each corpus weighted by its number of "
                 "tasks). `*`: the 95% interval excludes zero. Secondary comparisons are not corrected for "
                 "multiplicity. Seed spread: standard deviation over seeds of the mean over tasks.")]


def corpus_seconds(records: list[dict] | None) -> dict:
    """Summed run seconds per (corpus, method), from the predictions records (one per run and seed)."""
    runs = {(r["corpus"], r["method"], r.get("run")): float(r.get("seconds") or 0.0) for r in records or []}
    out: dict[tuple, float] = {}
    for (c, m, _), sec in runs.items():
        out[c, m] = out.get((c, m), 0.0) + sec
    return out


def run_seconds(rows: list[dict], records: list[dict] | None = None, grid: Grid | None = None) -> dict:
    """Summed seconds of each method's runs: from the predictions records (one per run and seed), else
    from the rows (one run per corpus, method and seed, or per corpus and method when stage 1 is shared)."""
    runs: dict[tuple, float] = {}
    if records:
        runs = {(m, c): sec for (c, m), sec in corpus_seconds(records).items()}
    else:
        shared = grid is not None and grid.share_stage1_across_seeds
        for r in rows:
            if r.get("run_seconds", "") != "":
                seed = "" if shared or r["method"] == "zero_shot" else r["seed"]
                runs[r["method"], r["corpus"], seed] = float(r["run_seconds"])
    out: dict[str, float] = {}
    for (m, *_), sec in runs.items():
        out[m] = out.get(m, 0.0) + sec
    return out


def report_markdown(rows: list[dict], grid: Grid | None = None, elapsed: float | None = None,
                    boot: dict | None = None, seconds: dict | None = None, by_corpus: dict | None = None,
                    records: list[dict] | None = None) -> str:
    if not rows:
        return "# Results\n\nNo finished runs yet.\n"
    s = summarise(rows)
    scope = boot["scopes"].get("all") if boot else None
    seconds = seconds if seconds is not None else run_seconds(rows, grid=grid)
    lines = ["# Results", ""]
    lines.append(f"{len(rows)} results (rows of results.csv) over {len(s['tasks'])} tasks; Macro F1 is the mean over "
                 "tasks and seeds (zero_shot: its one evaluation), with its 95% bootstrap interval.")
    if elapsed is not None:
        lines.append(f"Wall time of this invocation: {elapsed / 60:.1f} min.")
    lines += ["", f"| method | Macro F1 [95% CI] | seed spread | {REFERENCE} minus this [95% CI] | tasks won vs sft "
              "| run seconds (sum) | probing Macro F1 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [_method_line(s, m, scope, seconds) for m in s["methods"]]
    lines += _boot_note(boot) + (_corpus_lines(boot, by_corpus) if boot else [])
    lines += claims_lines(boot) + contrast_lines(boot) + head_lines(boot) + string_match_lines(boot, s)
    lines += precision_lines(records)
    return "\n".join(lines + _per_task_lines(s) + NOTES)


def write_results(out: Path, rows: list[dict], grid: Grid | None = None, elapsed: float | None = None,
                  records: list[dict] | None = None, resamples: int = 10_000, seed: int = 0) -> dict | None:
    """``results.csv``, ``results.md`` and the plots from ``rows``; with ``records`` (the predictions,
    :func:`.predictions.load_predictions`) the paired bootstrap too (also in ``bootstrap.json``),
    which it returns."""
    write_csv(out, rows)
    boot = None
    if records:
        methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
        boot = bootstrap(records, methods, resamples, seed)
        extra = contrasts(records, resamples, seed)
        if extra:  # absent without both methods of a pair: the core tier's file is unchanged
            boot["contrasts"] = extra
        heads = head_boot(records, resamples, seed)
        if heads:  # absent without probing heads in the predictions: older files' reports are unchanged
            boot["heads"] = heads
        string_match = string_match_boot(records, resamples, seed)
        if string_match:  # absent without the string-match scorer's fields: older reports are unchanged
            boot["string_match"] = string_match
        atomic_write_json(out / "bootstrap.json", boot)
        print(f"bootstrap: {resamples:,} resamples in {boot['seconds']:.1f} s")
        boot = boot if boot["scopes"] else None
    seconds = run_seconds(rows, records, grid)
    atomic_write_text(out / "results.md", report_markdown(rows, grid, elapsed, boot, seconds, corpus_seconds(records),
                                                            records))
    if rows:
        plot(rows, out, boot)
    return boot
