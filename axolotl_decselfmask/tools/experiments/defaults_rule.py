"""The rule that sets the plugin's defaults (docs/results.md, "The ladder (issue 34): plan", "The rule that
sets the plugin's defaults (fixed now)"), computed from the ladder's figures so that applying it is mechanical.

Candidates: every considered rung x classifier of ``decselfmask``: ``options`` (the generative classifier,
its calibrated decision under the option scoring), the ``package`` head and the ``authors`` head (each head's
argmax); never the string-match scorer. A rung is considered when its figures are computed: complete (or
every rung with runs, with ``include_partial``, a declared cut). A candidate's figure is the ladder's own (mean
Macro F1 over tasks and the rung's seeds [95% interval]); its cost, the mean ``seconds`` of the rung's
``decselfmask`` runs (the predictions files' first line): the heads are fitted inside those runs, so a rung's
three classifiers carry the same run seconds.

The reference is today's default: rung 1's ``decselfmask`` with ``options``. The winner is the candidate of
the highest mean (the first in rung, then options/package/authors order on a tie, so the reference on a tie).
Winner minus reference: the paired bootstrap (:func:`.bootstrap.bootstrap`, the report's resamples and seed)
over the seeds both have. The winner becomes the default if that interval excludes zero; else the cheaper of
the two by mean run seconds (today's default on a tie, where a run's seconds are not recorded, or where the two
are within :data:`COST_MARGIN` of each other: amendment L5).

Without DecSelfMask: ``sft`` (options) and the two heads of the ``sft`` runs (the heads on the untouched
model), at each considered rung that runs ``sft`` itself. Its best "beats every DecSelfMask setting" when its
mean is above every candidate's (the paired interval of it minus the DecSelfMask winner is given beside it);
then :data:`README` names it for the README.

The rule is **applied** only when every rung is complete, or with ``include_partial``; until then it is
computed over the complete rungs and marked not applied, with the rungs it could not consider."""

from __future__ import annotations

from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE, paired_difference
from axolotl_decselfmask.tools.experiments.predictions import head_records

SFT = "sft"
#: amendment L5: run seconds within this factor of each other are no cost difference (two lanes and other work on
#: the machine moved one run's seconds by up to 1.9x: rung 1's sft, 1,145 s at seed 0 and 2,125 s at seed 1)
COST_MARGIN = 2.0
ARM = "arm"  # the candidates of the arm beyond the paper (amendment A1): records[ARM] are its records
CLASSIFIERS = ("options", "package", "authors")  # never string_match: a user's own predictions do not score so
README = "{who} beats every DecSelfMask setting of the ladder"


def _label(c: dict) -> str:
    if c["rung"] == ARM:
        return f"the arm's {c['method']} (its own decision; rung {c['stage1_rung']}'s stage 1)"
    what = "options" if c["classifier"] == "options" else f"{c['classifier']} head"
    return f"rung {c['rung']}'s {c['method']} ({what})"


def _arm_candidates(arm: dict, methods: tuple[str, ...]) -> list[dict]:
    """The arm's ``methods`` with figures, as candidates (their own decision: ``options`` in :func:`_view`).
    Their cost is the run's seconds plus, for a method whose stage 1 is reused, that stage 1's
    (``cost_seconds``, :func:`.arm.arm_figures`): the rule compares whole settings."""
    return [{"rung": ARM, "stage1_rung": arm["rung"], "method": m, "classifier": "options", "mean": f["mean"],
             "low": f["low"], "high": f["high"], "seeds": f["seeds"], "seconds": f["cost_seconds"]}
            for m in methods if (f := arm["methods"].get(m))]


def _view(records: list[dict], method: str, classifier: str) -> list[dict]:
    """``method``'s records as ``classifier`` scores them."""
    own = [r for r in records if r["method"] == method]
    if classifier != "options":
        own = [r for r in head_records(own) if r["method"] == f"{method}:{classifier}_head"]
    return own


def _candidates(rung: dict, records: list[dict], method: str) -> list[dict]:
    figures = rung["methods"].get(method) or {}
    seconds = [float(r["seconds"]) for r in records if r["method"] == method and r.get("seconds") is not None]
    has = [r for r in records if r["method"] == method]
    out = []
    for classifier in CLASSIFIERS:
        fig = figures.get("options") if classifier == "options" else (figures.get("heads") or {}).get(classifier)
        if fig:
            out.append({"rung": rung["rung"], "method": method, "classifier": classifier, "mean": fig["mean"],
                        "low": fig["low"], "high": fig["high"], "seeds": figures.get("seeds"),
                        "seconds": sum(seconds) / len(seconds) if seconds and len(seconds) == len(has) else None})
    return out


def _paired(a: dict, b: dict, records: dict[int, list[dict]], resamples: int, seed: int) -> dict | None:
    """``a`` minus ``b`` (candidates), paired over the seeds both have: {mean, low, high, excludes_zero, seeds}."""
    seeds = sorted(set(a["seeds"] or []) & set(b["seeds"] or []))
    if not seeds:
        return None
    pick = lambda c: _view([r for r in records[c["rung"]] if r["seed"] in seeds], c["method"], c["classifier"])  # noqa: E731
    try:
        diff = paired_difference(pick(a), pick(b), resamples, seed)
    except ValueError as err:
        raise SystemExit(f"report --ladder: the defaults rule, {_label(a)} minus {_label(b)}: {err}") from None
    return None if diff is None else {**diff, "seeds": seeds}


def defaults_rule(rungs: list[dict], records: dict, resamples: int, seed: int,
                  include_partial: bool, arm: dict | None = None, without_arm: bool = False) -> dict:
    """The rule over ``rungs`` (the ladder's rungs with their figures) and ``records`` (rung -> its counted
    predictions records, for the rungs whose figures are computed only); with ``arm`` (:func:`.arm.arm_report`),
    its DecSelfMask methods join the candidates and its methods without stage 1 the settings without
    DecSelfMask (amendment A1), and the rule is applied only once the arm is complete too; without it, only
    with ``without_arm`` (a declared decision not to run the arm) or ``include_partial``."""
    from axolotl_decselfmask.tools.experiments.arm import OURS, WITHOUT

    records = dict(records)
    if arm is not None:
        records[ARM] = arm["_records"]
    incomplete = [r["rung"] for r in rungs if r["status"] != "complete"]
    considered = [r for r in rungs if r["withheld"] != "rung" and any(x["method"] == REFERENCE
                                                                       for x in records.get(r["rung"], []))]
    numbers = [r["rung"] for r in considered]
    not_considered = [{"rung": r["rung"], "status": r["status"]} for r in rungs if r["rung"] not in numbers]
    candidates = [c for r in considered for c in _candidates(r, records[r["rung"]], REFERENCE)]
    without = [c for r in considered if SFT in r["methods_run"] for c in _candidates(r, records[r["rung"]], SFT)]
    if arm is not None:
        candidates += _arm_candidates(arm, OURS)
        without += _arm_candidates(arm, WITHOUT)
    reference = next((c for c in candidates if c["rung"] == 1 and c["classifier"] == "options"), None)
    winner = max(candidates, key=lambda c: c["mean"]) if candidates else None  # max keeps the first of a tie
    arm_state = arm["status"] if arm is not None else None if without_arm else "not run"
    out = {"applied": (not incomplete and arm_state in (None, "complete")) or include_partial,
           "incomplete_rungs": incomplete, "arm": arm_state,
           "rungs_considered": numbers, "rungs_not_considered": not_considered,
           "candidates": candidates, "reference": reference, "winner": winner, "difference": None,
           "choice": None, "why": None}
    if reference is None:
        out["why"] = "no reference: rung 1's decselfmask (options) has no figure"
    elif winner is reference:
        out["choice"], out["why"] = reference, "today's default is the highest"
    else:
        out["difference"] = d = _paired(winner, reference, records, resamples, seed)
        if d is None:
            out["why"] = "the winner and the reference share no seed: no paired interval"
        elif d["excludes_zero"]:
            out["choice"], out["why"] = winner, "its interval excludes zero"
        elif winner["seconds"] is None or reference["seconds"] is None:
            out["choice"], out["why"] = reference, "its interval includes zero and a run's seconds are not recorded"
        elif max(winner["seconds"], reference["seconds"]) < COST_MARGIN * min(winner["seconds"], reference["seconds"]):
            out["choice"], out["why"] = reference, (
                f"its interval includes zero and the run seconds are within {COST_MARGIN:g}x of each other, the "
                "spread of one run's seconds beside a second lane (amendment L5): no cheaper one, today's default stays")
        else:
            cheaper = winner if winner["seconds"] < reference["seconds"] else reference
            out["choice"], out["why"] = cheaper, "its interval includes zero: the cheaper of the two by run seconds"
    best = max(without, key=lambda c: c["mean"]) if without else None
    beats = bool(best and candidates and all(best["mean"] > c["mean"] for c in candidates))
    out["without_decselfmask"] = {
        "candidates": without, "best": best, "beats_every_decselfmask": beats,
        "minus_winner": _paired(best, winner, records, resamples, seed) if best and winner else None}
    who = None if not best else _who(best)
    out["readme_sentence"] = README.format(who=who) + "." if beats and out["applied"] else None
    return out


def _who(c: dict) -> str:
    """The README's name of the best setting without DecSelfMask."""
    if c["rung"] == ARM:
        return {"sft_early_stop": "Plain SFT (trained until it stops improving)",
                "head": "A head on the untouched model (the package head)",
                "head_authors": "A head on the untouched model (the authors' head)"}[c["method"]]
    return "Plain SFT" if c["classifier"] == "options" else f"A head on the untouched model (the {c['classifier']} head)"


def _fig(c: dict) -> str:
    return f"{c['mean']:.4f} [{c['low']:.4f}, {c['high']:.4f}]"


def _diff(d: dict) -> str:
    return (f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (seeds {','.join(map(str, d['seeds']))}), whose "
            f"interval {'excludes' if d['excludes_zero'] else 'includes'} zero")


def _rungs(numbers: list) -> str:
    return ("rung " if len(numbers) == 1 else "rungs ") + ", ".join(map(str, numbers))


def _arm_state(state: str) -> str:
    if state == "not run":
        return ("the arm beyond the paper (amendment A1) has not run (`--arm` gives it; `--without-arm` declares it "
                "will not run)")
    return f"the arm beyond the paper (amendment A1) is {state}"


def rule_paragraph(rule: dict) -> str:
    """The results section's paragraph: the candidates, the winner, its interval, the decision, the rungs
    not considered; "not applied yet" while a rung is incomplete (without ``include_partial``)."""
    text = "Defaults rule (pre-registered): "
    if not rule["applied"]:
        inc = rule["incomplete_rungs"]
        parts = ([f"{_rungs(inc)} {'is' if len(inc) == 1 else 'are'} incomplete"] if inc else []) + (
            [_arm_state(rule["arm"])] if rule.get("arm") not in (None, "complete") else [])
        text += (f"not applied yet: {' and '.join(parts)}; it is applied when the ladder"
                 f"{' and the arm are' if rule.get('arm') else ' is'} finished or a cut is declared "
                 "(`--include-partial`).")
        if not rule["candidates"]:
            return text + " No rung is complete, so no candidate is considered yet."
        text += (f" So far, over the complete {_rungs(rule['rungs_considered'])}"
                 + (" and the arm" if any(c["rung"] == ARM for c in rule["candidates"]) else "") + ": ")
    else:
        text += f"over {_rungs(rule['rungs_considered'])}" + (
            " and the arm" if any(c["rung"] == ARM for c in rule["candidates"]) else "")
        if rule["rungs_not_considered"]:
            text += (" (not considered, no figures: " + ", ".join(
                f"rung {r['rung']} {r['status']}" for r in rule["rungs_not_considered"]) + ")")
        text += ": "
    if not rule["candidates"]:
        return text + "no DecSelfMask setting has a figure."
    text += (f"{len(rule['candidates'])} DecSelfMask settings (rung x options, package head, authors head"
             + ("; the arm's methods" if any(c["rung"] == ARM for c in rule["candidates"]) else "") + "), mean "
             "Macro F1 over tasks and seeds; the highest is " + f"{_label(rule['winner'])}, {_fig(rule['winner'])}")
    ref = rule["reference"]
    if ref is None:
        text += f"; {rule['why']}."
    elif rule["winner"] is ref:
        text += f", today's default itself: {_label(ref)} {'stays' if rule['applied'] else 'would stay'}."
    elif rule["difference"] is None:
        text += f"; {rule['why']}."
    else:
        choice = rule["choice"]
        verb = ("becomes" if choice is not ref else "stays") if rule["applied"] else (
            "would become" if choice is not ref else "would stay")
        cost = ("" if ref["seconds"] is None or rule["winner"]["seconds"] is None else
                f" (run seconds {rule['winner']['seconds']:.0f} against {ref['seconds']:.0f})")
        text += (f"; minus today's default ({_label(ref)}, {_fig(ref)}) it is {_diff(rule['difference'])}{cost}: "
                 f"{_label(choice)} {verb} the default ({rule['why']}).")
    w = rule["without_decselfmask"]
    if w["best"]:
        text += (f" Without DecSelfMask the best is {_label(w['best'])}, {_fig(w['best'])}, "
                 f"{'above' if w['beats_every_decselfmask'] else 'not above'} every DecSelfMask setting")
        text += f" (minus the highest: {_diff(w['minus_winner'])})." if w["minus_winner"] else "."
    if rule["readme_sentence"]:
        text += f" The README says so: \"{rule['readme_sentence']}\""
    return text
