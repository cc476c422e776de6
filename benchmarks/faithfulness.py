"""Faithfulness of the relevance methods: does deleting a method's top tokens hurt the model more than
deleting the same number of tokens chosen at random?

For each method (name:target:prompt style) and each labelled note (the shipped test abstracts, cut to
``--max-tokens`` tokens at a word boundary), the method's map of the note for the item = the note's gold
label is computed with the relevance prompt. Then the top k% text tokens (k = 5, 10, 20, 30) of the
selection the plugin's spans use for that method (``spans.sign: auto``: by r, the positive part, for
AttnLRP; by |r| for the others) are deleted: each chosen token's characters (its leading space kept) are
replaced by the mask string ``<mask>`` (one mask per token, so every arm at a given k inserts the same
number of masks), and two scores are measured on the masked note:

(a) the item's own score: the method's target on the method's relevance prompt (sum_logprob: summed
    log-probability of the item; max_logit: the largest logit at the middle item token), and
(b) not circular: the zero-shot classification score of the gold label, the gold option's
    log-probability normalised over the 5 options (stage2/scoring.py ``score_options``, options
    prompt, the classification defaults' question and system turn).

The drop is the score of the note minus the score of the masked note (bigger = the deleted tokens
mattered more). Besides that selection, the other sign's (top r for a method whose spans use |r|, and
the other way round; the same tokens for all-positive maps such as attention's) is deleted too.
Controls, each with as many tokens as the method's top k% and matched to the selection the spans use:

- ``random tokens``: drawn uniformly from the note (seeded by note and k: the same for every method);
- ``random spans``: the runs of consecutive tokens that the method's top k% form, placed at random
  non-overlapping positions (same number and lengths of runs);
- ``position deciles``: in each tenth of the note, as many random tokens as the method took there.

Reported: the deletion curves, their area (mean drop over k in [0, 30%], trapezoid from a zero drop at
k = 0) with a bootstrap 95% interval over notes, the paired difference of each method's area to each
control's, the share of the method's spans (stage1/spans.py ``select_spans``, default settings) made only
of stop-words or punctuation, and where the spans sit (share of span centres in each tenth of the note),
beside the same for random spans of the same lengths (stage1/selectors.py ``random_like_relevance``).

Resumable: each (method, note) result is a JSON file under ``benchmarks/results/faithfulness/`` (written
atomically), the note's unmasked and random-token scores shared by methods in ``_shared/``; a stopped
run continues where it stopped. A file made with other settings (model, notes, k, mask) is ignored.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/faithfulness.py [--notes 40] [--ig-notes 15]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from axolotl_decselfmask.io.files import atomic_write_json, atomic_write_text, read_json  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "faithfulness"
REPORT = ROOT / "benchmarks" / "results" / "faithfulness.md"
MODEL = ROOT / "models" / "smollm2-135m-instruct"
DATA = ROOT / "examples" / "data" / "abstracts_test.jsonl"
KS = (5, 10, 20, 30)
CONTROLS = ("random tokens", "random spans", "position deciles")
SIGNED = "method, signed"
MASK = "<mask>"
VERSION = 2  # bump when what a cached file holds changes

#: name -> (relevance method, target, prompt style); the first is the plugin's default
METHODS = {
    "attnlrp": ("attnlrp", "sum_logprob", "question"),  # the plugin's default (its spans: max(r, 0))
    "grad_x_input": ("grad_x_input", "sum_logprob", "question"),  # the default until this measurement
    "grad_x_input:max_logit": ("grad_x_input", "max_logit", "question"),
    "attnlrp:max_logit:completion": ("attnlrp", "max_logit", "completion"),
    "integrated_gradients": ("integrated_gradients", "sum_logprob", "question"),
    "attention": ("attention", "sum_logprob", "question"),
}
def _default_name() -> str:
    """The METHODS entry that is the plugin's default relevance (method, target, prompt style)."""
    from axolotl_decselfmask.args import DecSelfMaskConfig

    rel = DecSelfMaskConfig().relevance
    return next(n for n, v in METHODS.items() if v == (rel.method, rel.target, rel.prompt_style))


DEFAULT = _default_name()


def span_sign_of(name: str) -> str:
    """How the plugin's spans treat the sign of this method's map (``spans.sign: auto``): ``absolute``
    (top |r|) or ``positive`` (top r)."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.examples import span_sign

    method, target, style = METHODS[name]
    return span_sign(DecSelfMaskConfig(relevance={"method": method, "target": target, "prompt_style": style}))
LABELS_SEEN: list[str] = []  # the options of (b), set when the data is read
LIMITED = {"integrated_gradients"}  # run on --ig-notes notes only

# A small English stop-word list (articles, pronouns, auxiliaries, prepositions, conjunctions, the
# commonest adverbs and the boilerplate of abstracts' sentences is *not* in it: "patients", "study" count).
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each either few for from further had has have
having he her here hers herself him himself his how however i if in into is it its itself just may me might
more most must my myself no nor not now of off on once only or other our ours ourselves out over own per
same she should so some such than that the their theirs them themselves then there these they this those
through thus to too under until up upon very was we were what when where whether which while who whom whose
why will with within without would yet you your yours yourself yourselves one two three
""".split())


# -- notes ----------------------------------------------------------------------------------------------
def cut_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut after at most ``max_tokens`` tokens, at a word boundary."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    end = offsets[max_tokens - 1][1]
    if end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end = text.rfind(" ", 0, end)
    return text[:end].rstrip()


def pick_notes(tokenizer, n: int, max_tokens: int, seed: int) -> list[dict]:
    """``n`` labelled notes with at least ``max_tokens`` tokens, the classes in turn (seeded order)."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    order = np.random.default_rng(seed).permutation(len(rows))
    by_label: dict[str, list[dict]] = {}
    for i in order:
        r = rows[i]
        if len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) >= max_tokens:
            by_label.setdefault(r["label"], []).append(r)
    labels = sorted(by_label)
    notes = []
    for j in range(max(len(v) for v in by_label.values())):
        for lab in labels:
            if j < len(by_label[lab]) and len(notes) < n:
                r = by_label[lab][j]
                notes.append({"id": r["id"], "label": r["label"], "text": cut_to_tokens(tokenizer, r["text"], max_tokens)})
    return notes


# -- masking and the controls ---------------------------------------------------------------------------
def mask_tokens(text: str, offsets, chosen) -> str:
    """``text`` with each chosen token's characters (leading whitespace kept) replaced by ``MASK``."""
    pieces, cursor = [], 0
    for i in sorted(set(int(c) for c in chosen)):
        s, e = offsets[i]
        while s < e and text[s].isspace():
            s += 1
        if e <= s or s < cursor:
            continue
        pieces += [text[cursor:s], MASK]
        cursor = e
    pieces.append(text[cursor:])
    return "".join(pieces)


def n_tokens(k: int, n: int) -> int:
    return max(1, int(round(k / 100 * n)))


def top_tokens(rel: np.ndarray, k: int, sign: str = "absolute") -> np.ndarray:
    """The top k% tokens: by |r| (``absolute``) or by r (``positive``: those that raise the target most)."""
    key = np.abs(rel) if sign == "absolute" else rel
    return np.sort(np.argsort(-key, kind="stable")[: n_tokens(k, len(rel))])


def other_sign(sign: str) -> str:
    return "positive" if sign == "absolute" else "absolute"


def runs(idx: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive indices in sorted ``idx``."""
    lengths, prev = [], None
    for i in idx:
        if prev is not None and i == prev + 1:
            lengths[-1] += 1
        else:
            lengths.append(1)
        prev = i
    return lengths


def random_tokens(n: int, m: int, rng) -> np.ndarray:
    return np.sort(rng.choice(n, size=m, replace=False))


def random_runs(n: int, lengths: list[int], rng) -> np.ndarray:
    """Runs of ``lengths`` (in a random order) at uniformly random non-overlapping places of ``n`` tokens."""
    lengths = [lengths[i] for i in rng.permutation(len(lengths))]
    free = n - sum(lengths)
    slots = np.sort(rng.choice(free + len(lengths), size=len(lengths), replace=False))
    out, used = [], 0
    for j, (slot, length) in enumerate(zip(slots, lengths)):
        start = int(slot) - j + used
        out.extend(range(start, start + length))
        used += length
    return np.array(sorted(out))


def decile(i: int, n: int) -> int:
    return min(9, int(10 * i / n))


def same_deciles(n: int, idx: np.ndarray, rng) -> np.ndarray:
    """As many random tokens in each tenth of the note as ``idx`` has there."""
    out = []
    for d in range(10):
        want = sum(1 for i in idx if decile(int(i), n) == d)
        pool = [i for i in range(n) if decile(i, n) == d]
        if want:
            out.extend(rng.choice(pool, size=want, replace=False).tolist())
    return np.array(sorted(out))


def control_rng(note_id: int, k: int, control: str, method: str | None = None):
    salt = [int(hashlib.sha256((method or "").encode()).hexdigest()[:8], 16)] if method else []
    return np.random.default_rng([20240, int(note_id), k, CONTROLS.index(control), *salt])


# -- scores ---------------------------------------------------------------------------------------------
@dataclass
class Env:
    model: object
    tokenizer: object
    labels: list[str]
    question: str
    system: str
    lead_ins: dict
    batch: int


def item_scores(env: Env, target: str, style: str, texts: list[str], item: str) -> list[float]:
    """(a): the method's target on the relevance prompt of each text, item = ``item``."""
    import torch

    from axolotl_decselfmask.relevance import build_relevance_prompt
    from axolotl_decselfmask.relevance.methods import GradientXInput

    scorer = GradientXInput(env.model, env.tokenizer, target, "middle")
    prompts = [build_relevance_prompt(env.tokenizer, t, item, env.lead_ins[style], style) for t in texts]
    out = []
    with torch.inference_mode():
        for s in range(0, len(prompts), env.batch):
            chunk = prompts[s: s + env.batch]
            batch = scorer.batch(chunk)
            out.extend(scorer.scores(batch, input_ids=batch.ids).float().cpu().tolist())
    return out


def gold_scores(env: Env, texts: list[str], label: str) -> list[float]:
    """(b): the gold option's log-probability normalised over the options (zero-shot, options prompt)."""
    from axolotl_decselfmask.stage2.scoring import score_options

    lp = score_options(env.model, env.tokenizer, texts, env.labels, env.question, env.system, progress=False,
                       batch_size=env.batch)
    norm = lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)
    return norm[:, env.labels.index(label)].tolist()


def settings_fp(args) -> str:
    return hashlib.sha256(json.dumps({"v": VERSION, "model": str(args.model), "max_tokens": args.max_tokens,
                                      "seed": args.seed, "ks": KS, "mask": MASK}).encode()).hexdigest()[:16]


def method_fp(fp: str, sign: str) -> str:
    """A (method, note) file's settings: a method whose spans use max(r, 0) ranks by r and matches its
    controls to that (files of the absolute selection keep their settings)."""
    return fp if sign == "absolute" else f"{fp}+positive"


def selection_label(sign: str) -> str:
    return "top abs(r)" if sign == "absolute" else "top r"


def cached(path: Path, fp: str):
    data = read_json(path)
    return data if isinstance(data, dict) and data.get("settings") == fp else None


def shared_scores(env: Env, note: dict, target: str, style: str, fp: str) -> dict:
    """The note's unmasked scores and the random-token control, identical for every method of a target
    (a) or for every method (b); computed once, cached in ``_shared/``."""
    path = OUT / "_shared" / f"{note['id']}-{target}-{style}.json"
    hit = cached(path, fp)
    if hit:
        return hit
    offsets = note_offsets(env, note, style)
    n = len(offsets)
    texts = [note["text"]] + [mask_tokens(note["text"], offsets, random_tokens(n, n_tokens(k, n),
                                                                             control_rng(note["id"], k, CONTROLS[0])))
                              for k in KS]
    a = item_scores(env, target, style, texts, note["label"])
    bpath = OUT / "_shared" / f"{note['id']}-classify.json"
    bhit = cached(bpath, fp)
    if bhit is None:
        bhit = {"settings": fp, "b": gold_scores(env, texts, note["label"]), "texts": texts}
        atomic_write_json(bpath, bhit)
    if bhit["texts"] != texts:  # other token offsets (another prompt style): score this style's own
        b = gold_scores(env, texts, note["label"])
    else:
        b = bhit["b"]
    data = {"settings": fp, "a": a, "b": b, "n_tokens": n}
    atomic_write_json(path, data)
    return data


def note_offsets(env: Env, note: dict, style: str):
    from axolotl_decselfmask.relevance import build_relevance_prompt

    return build_relevance_prompt(env.tokenizer, note["text"], note["label"], env.lead_ins[style], style).offsets


# -- one (method, note) ---------------------------------------------------------------------------------
def relevance_map(env: Env, name: str, note: dict) -> tuple[np.ndarray, list, float]:
    from axolotl_decselfmask.compat import attn_implementation, restore_attention
    from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    method_name, target, style = METHODS[name]
    method = BUILTIN_METHODS[method_name](env.model, env.tokenizer, target, "middle", steps=32)
    prompt = build_relevance_prompt(env.tokenizer, note["text"], note["label"], env.lead_ins[style], style)
    before = attn_implementation(env.model)
    start = time.perf_counter()
    try:
        rel = compute_relevance(method, [prompt], 1)[0]
    finally:
        restore_attention(env.model, before)
    return np.asarray(rel, dtype=np.float64), prompt.offsets, time.perf_counter() - start


def result_path(name: str, note: dict) -> Path:
    return OUT / name.replace(":", "+") / f"{note['id']}.json"


def method_note(env: Env, name: str, note: dict, fp: str) -> dict:
    """Everything the report needs of one (method, note), cached."""
    from axolotl_decselfmask.stage1.selectors import random_like_relevance
    from axolotl_decselfmask.stage1.spans import SpanSettings, select_spans

    path = result_path(name, note)
    sign = span_sign_of(name)
    own_fp = method_fp(fp, sign)  # this file's; the shared scores keep ``fp``
    hit = cached(path, own_fp)
    if hit:
        return hit
    _, target, style = METHODS[name]
    rel, offsets, seconds = relevance_map(env, name, note)
    n = len(rel)
    texts, arms = [], []
    for k in KS:  # "method": the selection the spans use; the controls match it; SIGNED: the other sign's
        top = top_tokens(rel, k, sign)
        other = top_tokens(rel, k, other_sign(sign))
        chosen = {"method": top, "random spans": random_runs(n, runs(top), control_rng(note["id"], k, CONTROLS[1], name)),
                  "position deciles": same_deciles(n, top, control_rng(note["id"], k, CONTROLS[2], name))}
        if not np.array_equal(other, top):  # all-positive maps (attention): the same tokens
            chosen[SIGNED] = other
        for arm, idx in chosen.items():
            texts.append(mask_tokens(note["text"], offsets, idx))
            arms.append((arm, k))
    start = time.perf_counter()
    a = item_scores(env, target, style, texts, note["label"])
    b = gold_scores(env, texts, note["label"])
    shared = shared_scores(env, note, target, style, fp)
    drops = {"a": {}, "b": {}}
    for score, values in (("a", a), ("b", b)):
        for (arm, k), v in zip(arms, values):
            drops[score].setdefault(arm, {})[str(k)] = shared[score][0] - v
        drops[score]["random tokens"] = {str(k): shared[score][0] - v for k, v in zip(KS, shared[score][1:])}
        for k in KS:
            drops[score].setdefault(SIGNED, {}).setdefault(str(k), drops[score]["method"][str(k)])
    spans = select_spans(rel, offsets, note["text"], SpanSettings(sign=sign))
    rand = random_like_relevance(rel, offsets, note["text"], SpanSettings(sign=sign),
                                 np.random.default_rng([7, int(note["id"])]))
    data = {"settings": own_fp, "method": name, "note": note["id"], "n_tokens": n, "drops": drops, "sign": sign,
            "base": {"a": shared["a"][0], "b": shared["b"][0]}, "spans": spans, "random_spans": rand,
            "relevance_s": seconds, "deletion_s": time.perf_counter() - start,
            "relevance": [round(float(v), 7) for v in rel]}
    atomic_write_json(path, data)
    return data


# -- the report -----------------------------------------------------------------------------------------
def auc(curve: dict) -> float:
    xs = [0.0] + [k / 100 for k in KS]
    ys = [0.0] + [curve[str(k)] for k in KS]
    return float(np.trapezoid(ys, xs) / xs[-1])


def boot(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    return float(values.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def is_stop_span(text: str) -> bool:
    words = re.findall(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*", text)
    return all(w.lower() in STOP_WORDS for w in words)


def span_stats(rows: list[dict], texts: dict, key: str) -> tuple[float, list[float], float]:
    """Share of spans only of stop-words/punctuation, share of span centres per tenth, spans per note."""
    stop, where, count = 0, np.zeros(10), 0
    for r in rows:
        text = texts[r["note"]]
        for s, e in r[key]:
            count += 1
            stop += is_stop_span(text[s:e])
            where[min(9, int(10 * (s + e) / 2 / len(text)))] += 1
    return stop / max(count, 1), (where / max(count, 1)).tolist(), count / max(len(rows), 1)


def fmt(m, lo, hi, digits=2) -> str:
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def score_table(results: dict, score: str) -> tuple[list[str], dict]:
    """Rows: the method's selection (what its spans use), the other sign's, then the controls; with the
    paired differences."""
    lines = ["| method | deleted | " + " | ".join(f"{k}%" for k in KS)
             + " | AUC [95% CI] | what the spans use - this [95% CI] | the other sign - this [95% CI] |",
             "| --- | --- | " + " | ".join("---:" for _ in KS) + " | ---: | ---: | ---: |"]
    verdict = {}
    for name, rows in results.items():
        arms = ["method", SIGNED, *CONTROLS]
        aucs = {arm: np.array([auc(r["drops"][score][arm]) for r in rows]) for arm in arms}
        for arm in arms:
            curve = [np.mean([r["drops"][score][arm][str(k)] for r in rows]) for k in KS]
            diffs = ["" if arm == ref else fmt(*boot(aucs[ref] - aucs[arm])) for ref in ("method", SIGNED)]
            label = f"{name} (n={len(rows)})" if arm == "method" else ""
            sign = rows[0].get("sign", "absolute")
            shown = {"method": f"{selection_label(sign)} (what the spans use)",
                     SIGNED: selection_label(other_sign(sign))}.get(arm, arm)
            lines.append(f"| {label} | {shown} | " + " | ".join(f"{c:.2f}" for c in curve)
                         + f" | {fmt(*boot(aucs[arm]))} | {diffs[0]} | {diffs[1]} |")
        verdict[name] = {ref: {c: [bool(np.mean([r["drops"][score][ref][str(k)] - r["drops"][score][c][str(k)]
                                                 for r in rows]) > 0) for k in KS] for c in CONTROLS}
                         for ref in ("method", SIGNED)}
    return lines, verdict


def summary(results: dict) -> list[str]:
    """One row a method and selection: the area of its deletion curve, its paired differences to the
    controls, and whether it is above every control at every k."""
    head = " | ".join(f"({s}) minus {c} [95% CI]" if c != "method" else f"({s}) AUC [95% CI]"
                      for s in ("a", "b") for c in ("method", *CONTROLS))
    lines = ["## Summary: area of the deletion curves, and its paired difference to each control", "",
             "Positive differences: deleting the method's tokens lowers the score more than deleting the control's. "
             "'above all': above every control at every k (mean drops), for (a) and (b).", "",
             f"| method | deleted | notes | {head} | above all (a), (b) |", "| --- | --- | ---: |" + " ---: |" * 8 + " --- |"]
    for name, rows in results.items():
        sign = rows[0].get("sign", "absolute")
        for ref, what in (("method", f"{selection_label(sign)} (spans)"), (SIGNED, selection_label(other_sign(sign)))):
            if ref == SIGNED and all(r["drops"]["a"][SIGNED] == r["drops"]["a"]["method"] for r in rows):
                continue  # an all-positive map (attention): the same tokens
            cells, above = [], []
            for score in ("a", "b"):
                aucs = {arm: np.array([auc(r["drops"][score][arm]) for r in rows]) for arm in (ref, *CONTROLS)}
                cells.append(fmt(*boot(aucs[ref])))
                cells += [fmt(*boot(aucs[ref] - aucs[c])) for c in CONTROLS]
                above.append(all(np.mean([r["drops"][score][ref][str(k)] - r["drops"][score][c][str(k)] for r in rows]) > 0
                                 for c in CONTROLS for k in KS))
            lines.append(f"| {name} | {what} | {len(rows)} | " + " | ".join(cells)
                         + f" | {', '.join('yes' if x else 'no' for x in above)} |")
    return lines + [""]


def report(results: dict, notes: list[dict], args, seconds: dict) -> str:
    import torch
    import transformers

    texts = {n["id"]: n["text"] for n in notes}
    out = [f"# Faithfulness of the relevance methods ({time.strftime('%Y-%m-%d')})", "",
           f"Command: `OMP_WAIT_POLICY=PASSIVE python benchmarks/faithfulness.py --notes {args.notes} --ig-notes "
           f"{args.ig_notes} --max-tokens {args.max_tokens}`", "",
           f"Machine: torch {torch.__version__}, transformers {transformers.__version__}, "
           f"`torch.backends.cpu.get_cpu_capability()` = `{torch.backends.cpu.get_cpu_capability()}`, "
           f"{torch.get_num_threads()} threads; model {Path(args.model).name} float32; notes: "
           f"{len(notes)} labelled test abstracts (classes in turn), cut to {args.max_tokens} tokens; "
           f"integrated gradients on the first {args.ig_notes}.", ""]
    base_b = np.mean([r["base"]["b"] for r in results[DEFAULT]])
    out += ["Unmasked notes: the gold option's normalised log-probability (b) is "
            f"{base_b:.2f} on average (chance: log(1/{len(LABELS_SEEN)}) = {math.log(1 / len(LABELS_SEEN)):.2f}); "
            "the item's own score (a): " + ", ".join(f"{name} {np.mean([r['base']['a'] for r in rows]):.2f}"
                                                    for name, rows in results.items()) + ".", ""]
    out += summary(results)
    titles = {"a": "(a) drop of the item's own score (the method's target; item = the gold label)",
              "b": "(b) drop of the zero-shot score of the gold label (log-probability normalised over the 5 options)"}
    verdicts = {}
    for score in ("a", "b"):
        lines, verdicts[score] = score_table(results, score)
        out += [f"## {titles[score]}", "", "Mean drop at each k (share of the text tokens deleted); AUC = mean drop "
                "over k in [0, 30%].", "", *lines, ""]
    out += ["## Spans (`select_spans`, default settings, each method's `spans.sign: auto`) and where they sit", "",
            "| method | spans per note | only stop-words/punctuation | share of span centres per tenth of the note |",
            "| --- | ---: | ---: | --- |"]
    for name, rows in results.items():
        stop, where, per = span_stats(rows, texts, "spans")
        out.append(f"| {name} | {per:.1f} | {stop:.0%} | {' '.join(f'{w:.0%}' for w in where)} |")
    for name, rows in results.items():
        if any("spans_other" in r for r in rows):
            stop, where, per = span_stats(rows, texts, "spans_other")
            rule = "abs(r)" if rows[0].get("sign", "absolute") == "positive" else "max(r, 0)"
            out.append(f"| {name}, spans of {rule} | {per:.1f} | {stop:.0%} | {' '.join(f'{w:.0%}' for w in where)} |")
    stop, where, per = span_stats(results[DEFAULT], texts, "random_spans")
    out.append(f"| random spans of {DEFAULT}'s lengths | {per:.1f} | {stop:.0%} | {' '.join(f'{w:.0%}' for w in where)} |")
    out += ["", f"## Goal: the default method ({DEFAULT}, spans of {span_sign_of(DEFAULT)} relevance) above every "
            "control at every k", ""]
    dsign = span_sign_of(DEFAULT)
    for score in ("a", "b"):
        for ref, what in (("method", f"{selection_label(dsign)}, as the spans"),
                          (SIGNED, f"{selection_label(other_sign(dsign))}, the other sign")):
            v = verdicts[score][DEFAULT][ref]
            failed = [f"{c} at {k}%" for c in CONTROLS for k, ok in zip(KS, v[c]) if not ok]
            out.append(f"- ({score}) {DEFAULT}, {what}: "
                       f"{'met' if not failed else 'NOT met: not above ' + ', '.join(failed)}")
    out += ["", "## Time", "", "| method | relevance s/note | deletion scoring s/note |", "| --- | ---: | ---: |"]
    for name, rows in results.items():
        out.append(f"| {name} | {np.mean([r['relevance_s'] for r in rows]):.2f} | "
                   f"{np.mean([r['deletion_s'] for r in rows]):.2f} |")
    total = sum(r["relevance_s"] + r["deletion_s"] for rows in results.values() for r in rows)
    out += ["", f"Summed time of the (method, note) computations: {total:.0f} s (as they were measured, when "
            f"they were computed); this invocation: {seconds['wall']:.0f} s."]
    return "\n".join(out) + "\n"


# -- main -----------------------------------------------------------------------------------------------
def other_sign_spans(env: Env, results: dict, notes: list[dict]) -> None:
    """The spans ``select_spans`` would choose with the other sign rule (report only, not cached): the
    selection that the other-sign rows delete, as spans (nothing for an all-positive map)."""
    from axolotl_decselfmask.stage1.spans import SpanSettings, select_spans

    by_id = {n["id"]: n for n in notes}
    for name, rows in results.items():
        for r in rows:
            rel = np.asarray(r["relevance"], dtype=np.float64)
            if (rel < 0).any():
                note = by_id[r["note"]]
                sign = other_sign(r.get("sign", "absolute"))
                r["spans_other"] = select_spans(rel, note_offsets(env, note, METHODS[name][2]), note["text"],
                                                SpanSettings(sign=sign))


def load_env(args) -> Env:
    import torch
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import (
        DEFAULT_COMPLETION_LEAD_IN,
        DEFAULT_LEAD_IN,
        ClassificationConfig,
    )
    from axolotl_decselfmask.relevance.loading import load_relevance_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = load_relevance_model(str(args.model), "float32", "cpu")
    labels = sorted({json.loads(line)["label"] for line in DATA.read_text().splitlines()})
    LABELS_SEEN[:] = labels
    c = ClassificationConfig()
    return Env(model, tokenizer, labels, c.question, c.system_prompt,
               {"question": DEFAULT_LEAD_IN, "completion": DEFAULT_COMPLETION_LEAD_IN}, args.batch)


def main(argv=None) -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--notes", type=int, default=40)
    parser.add_argument("--ig-notes", type=int, default=15)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="prompts per forward when scoring masked notes")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {list(METHODS)}")
    parser.add_argument("--report", default=str(REPORT), help="where the markdown table goes ('' = nowhere)")
    parser.add_argument("--out", default=str(OUT), help="the folder of the per-(method, note) results")
    parser.add_argument("--report-only", action="store_true",
                        help="no computing: the report of the (method, note) results already in --out")
    args = parser.parse_args(argv)
    OUT = Path(args.out)
    names = args.methods.split(",")
    unknown = [n for n in names if n not in METHODS]
    if unknown or DEFAULT not in names:
        raise SystemExit(f"--methods: unknown {unknown}; known {list(METHODS)} ({DEFAULT} is needed)")
    wall = time.perf_counter()
    env = load_env(args)
    notes = pick_notes(env.tokenizer, args.notes, args.max_tokens, args.seed)
    fp = settings_fp(args)
    results: dict[str, list[dict]] = {n: [] for n in names}
    for j, note in enumerate(notes):  # note by note: a stopped run has every method on its first notes
        for name in names:
            if name in LIMITED and j >= args.ig_notes:
                continue
            if args.report_only:
                hit = cached(result_path(name, note), method_fp(fp, span_sign_of(name)))
                results[name] += [hit] if hit else []
                continue
            t0 = time.perf_counter()
            results[name].append(method_note(env, name, note, fp))
            print(f"note {j + 1}/{len(notes)} (id {note['id']}) {name}: {time.perf_counter() - t0:.1f} s",
                  flush=True)
    results = {name: rows for name, rows in results.items() if rows}
    other_sign_spans(env, results, notes)
    text = report(results, notes, args, {"wall": time.perf_counter() - wall})
    print(text)
    if args.report:
        atomic_write_text(args.report, text)


if __name__ == "__main__":
    main()
