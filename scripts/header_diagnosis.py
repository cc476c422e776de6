"""Where the authors' string match finds an answer off format: which token of the assistant header the
model, teacher-forced, fails to predict, and what it predicts there instead.

    python scripts/header_diagnosis.py RECIPE [RECIPE ...] [--task NAME] [--notes N] [--json OUT]

RECIPE: a finished run's recipe (an experiment run's ``runs/<corpus>/<method>-seed<k>/recipe.yml``; run from the
folder its paths are relative to). Each task's test notes are read as the run's string match read them
(``stage2/evaluation.py``: the stage-2 rows with every token labelled, ``shift=False`` as the authors' Trainer
hands the logits to ``compute_metrics_sft``), with the run's trained classifier. For each note: whether the
predicted sequence holds the header (else the whole sequence is the answer: off format), the first header token
mispredicted where the header is expected (the argmax at the position before it), what was predicted there, and,
after a found header, the answer. One line a header token: how often it is mispredicted, and the three most
frequent predictions in its place. Diagnostic only: the figures of record are the run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path


def read_header(predicted: list[int], gold: list[int], header: list[int], special: set[int],
                options: set[tuple]) -> dict:
    """One note's teacher-forced argmax ``predicted`` (unshifted: position t holds the prediction of token
    t + 1) against its ``gold`` ids: ``found`` (the header is in ``predicted``, so an answer is read after it),
    ``answer`` (the ids read after it, ``special`` dropped; None when not found), ``answer_off`` (found, and
    the answer is none of the ``options``' id tuples), ``wrong`` ([(j, id predicted)] for each header token j
    mispredicted where the gold row has the header: the argmax one position before it)."""
    from axolotl_decselfmask.stage2.string_match import answer_ids, header_start

    start = header_start(gold, header)
    if start < 1:
        raise ValueError(f"header_diagnosis: the gold row has no header {header} after its first token")
    found = header_start(predicted, header) >= 0
    answer = tuple(answer_ids(predicted, header, special)) if found else None
    wrong = [(j, predicted[start - 1 + j]) for j, h in enumerate(header) if predicted[start - 1 + j] != h]
    return {"found": found, "answer": answer, "answer_off": found and answer not in options, "wrong": wrong}


def diagnose(recipe: str, task: str | None, notes: int | None) -> dict:
    from axolotl_decselfmask.args import plugin_config
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.prompts import ensure_chat_template
    from axolotl_decselfmask.stage2.evaluate import chosen_tasks, prepare
    from axolotl_decselfmask.stage2.evaluation import option_rows, string_match_rows
    from axolotl_decselfmask.stage2.model import load_tokenizer
    from axolotl_decselfmask.stage2.saved_run import load_classifier, read_recipe, trained_tasks
    from axolotl_decselfmask.stage2.string_match import answer_ids, header_and_special, teacher_forced_argmax

    cfg = read_recipe(recipe)
    config = plugin_config(cfg)
    saved = trained_tasks(cfg, config)
    if task is not None:  # an experiment run names its tasks <task>@seed<k>
        task = next((t.settings.task for t in saved if t.settings.task.split("@")[0] == task), task)
    chosen = chosen_tasks(saved, task, None)
    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    folders = {t.folder for t in chosen}
    if len(folders) > 1:  # joint: false: one classifier a task; say which
        raise SystemExit(f"header_diagnosis: {recipe} trains one classifier a task ({len(folders)}): pass --task")
    tasks = [t for t in prepare(cfg, config, chosen, None, tokenizer) if t.test_texts]
    if not tasks:
        raise SystemExit(f"header_diagnosis: {recipe} has no test notes to read (no test_file or test_fraction)")
    header, special, text, _ = header_and_special(tokenizer)
    model = load_classifier(cfg, config, chosen[0], recipe_precision(cfg).torch_dtype(), "header_diagnosis")
    model.eval()
    per_token = [Counter() for _ in header]
    missed = Counter()
    found = answers_off = n = 0
    off_answers = Counter()
    for t in tasks:
        texts, gold = t.test_texts[:notes], t.gold[:notes]
        rows = string_match_rows(tokenizer, t, gold, texts)
        predicted, golds = teacher_forced_argmax(model, tokenizer, rows, shift=False)
        options = {tuple(answer_ids(r["labels"], header, special))
                   for r in option_rows(tokenizer, t, texts)}
        for p, g in zip(predicted, golds):
            n += 1
            r = read_header(p, g, header, special, options)
            found += r["found"]
            if r["answer_off"]:
                answers_off += 1
                off_answers[tokenizer.decode(list(r["answer"]))[:60]] += 1
            for j, got in r["wrong"]:
                per_token[j][tokenizer.decode([got])] += 1
            if r["wrong"]:
                missed[r["wrong"][0][0]] += 1
    del model
    return {"recipe": recipe, "notes": n, "header": text, "header_tokens": [tokenizer.decode([h]) for h in header],
            "header_found": found, "found_but_answer_off_format": answers_off,
            "off_format_answers_after_the_header": off_answers.most_common(5),
            "first_mispredicted_header_token": {str(j): missed[j] for j in sorted(missed)},
            "mispredicted_per_header_token": [{"token": tokenizer.decode([h]), "mispredicted": sum(c.values()),
                                               "instead": c.most_common(3)} for h, c in zip(header, per_token)]}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--task")
    parser.add_argument("--notes", type=int, help="the first N test notes of each task (default: all)")
    parser.add_argument("--json", help="write the figures here as well")
    args = parser.parse_args(argv)
    out = []
    for recipe in args.recipes:
        d = diagnose(recipe, args.task, args.notes)
        out.append(d)
        print(f"{recipe}: {d['notes']} notes; header {d['header']!r} found in {d['header_found']} predicted "
              f"sequences ({d['found_but_answer_off_format']} of them with an answer off the options"
              + (f", most often {d['off_format_answers_after_the_header'][:3]}" if d['found_but_answer_off_format'] else "")
              + ")")
        for j, row in enumerate(d["mispredicted_per_header_token"]):
            print(f"  header token {j} {row['token']!r}: mispredicted {row['mispredicted']}x"
                  f" (first wrong {d['first_mispredicted_header_token'].get(str(j), 0)}x); instead {row['instead']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
