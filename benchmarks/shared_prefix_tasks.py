"""The evaluation of one-vs-rest tasks that share their test notes (plan P3, issue 14): the 22 yes/no
tasks of examples/grids/comparison_core_mtsamples.yml on ``--notes`` mtsamples notes cut to the grid's
700 characters, each task scored one prompt per (task, note) (stage2/scoring.py ``Scorer`` ->
``score_options``, as before P3) against all of them on one prefix per note
(stage2/scoring.py ``shared_test_scorers``, what stage2/run.py ``_run_group`` does now), side by
side in one run, with the largest relative difference of the scores and the predictions (argmax)
that differ.

The tasks are built as stage 2 builds them (``prepare_tasks`` on task files written to a temporary
folder): the grid's questions, ``prompt: mask_fill`` with the one-token mask
``<|decselfmask_mask|>`` (added to the tokenizer and the embedding, as stage 1 does), the grid's
``eval_batch_size``; the model SmolLM2-135M-Instruct in ``--dtype`` (bfloat16: the grid's
``bf16: auto`` on a CPU with AMX). Each path runs once after a warm-up on 2 notes; wall and process
CPU seconds are reported (CPU seconds move less with the machine's load). At the grid's
``sequence_len`` 224 some notes are cut differently for questions of different lengths: the tasks
still share one prefix per note (the tokens the cuts have in common).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/shared_prefix_tasks.py [--notes 16] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "models" / "smollm2-135m-instruct"
GRID = ROOT / "examples" / "grids" / "comparison_core_mtsamples.yml"
CORPUS = ROOT.parent / "shared" / "data" / "mtsamples.csv.gz"
MASK = "<|decselfmask_mask|>"


def _tasks(folder: Path, tokenizer, n_notes: int, chunk: int | None, sequence_len: int | None):
    """The grid's tasks as stage 2 prepares them, all with the same ``n_notes`` test notes."""
    import yaml
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.io.tables import read_table
    from axolotl_decselfmask.stage2.run import prepare_tasks

    grid = yaml.safe_load(GRID.read_text())
    (corpus,) = grid["corpora"]
    rows = read_table(CORPUS, "corpus")
    texts = [" ".join(str(r["text"]).split())[: grid["max_text_chars"]] for r in rows[: n_notes + 8]]
    (folder / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": "no"}) + "\n"
                                               for t in texts[:n_notes]))
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                                for t, y in zip(texts[n_notes:], ["yes", "no"] * 4)))
    stage2 = dict(grid["decselfmask"]["classification"], train=False, joint=True)
    if chunk:
        stage2["option_chunk"] = chunk
    tasks = [{"task": t["name"], "question": t["question"], "labels": ["yes", "no"],
              "train_file": str(folder / "train.jsonl"), "test_file": str(folder / "test.jsonl")}
             for t in corpus["tasks"]]
    config = DecSelfMaskConfig(items=["x"], masking={"mask_token": MASK}, tasks=tasks, classification=stage2)
    cfg = DictDefault({"sequence_len": sequence_len or grid["recipe"]["sequence_len"],
                       "output_dir": str(folder / "out"),
                       "datasets": []})
    return prepare_tasks(cfg, config, tokenizer), stage2


def _run(fn) -> tuple[float, float, object]:
    start, cpu = time.perf_counter(), time.process_time()
    got = fn()
    return time.perf_counter() - start, time.process_time() - cpu, got


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--option-chunk", type=int, default=None, help="classification.option_chunk (default 8)")
    parser.add_argument("--sequence-len", type=int, default=None,
                        help="sequence_len (default: the grid's 224, which cuts some notes for some tasks only)")
    parser.add_argument("--baseline-batch", type=int, default=0,
                        help="also score one prompt per task with this eval_batch_size (e.g. 1): how much the scores "
                             "move with the batch (padding) alone, beside the shared path's difference")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2.scoring import Scorer, shared_test_scorers

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK]})  # the one-token mask, as stage 1 adds it
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=getattr(torch, args.dtype))
    model.resize_token_embeddings(len(tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        tasks, stage2 = _tasks(Path(tmp), tokenizer, args.notes, args.option_chunk, args.sequence_len)
    full = {t.name: t.test_texts for t in tasks}
    cut_lists = len({tuple(v) for v in full.values()})  # notes cut differently for the questions' lengths
    groups = []
    notes = full[tasks[0].name]

    def separate(n):
        return np.stack([Scorer.of(model, tokenizer, t, False)(full[t.name][:n]) for t in tasks], 1)

    def shared(n):
        for t in tasks:
            t.test_texts = full[t.name][:n]
        scorers = shared_test_scorers(model, tokenizer, tasks, False)
        groups[:] = [len({id(x.shared) for x in scorers.values()})]
        return np.stack([(scorers.get(t.name) or Scorer.of(model, tokenizer, t, False))(t.test_texts) for t in tasks], 1)

    load_before = os.getloadavg()
    separate(2), shared(2)  # warm-up
    s_wall, s_cpu, s_scores = _run(lambda: separate(len(notes)))
    j_wall, j_cpu, j_scores = _run(lambda: shared(len(notes)))
    rel = float(np.max(np.abs(j_scores - s_scores) / np.maximum(np.abs(s_scores), 1e-12)))
    flips = int((j_scores.argmax(-1) != s_scores.argmax(-1)).sum())
    notes_raw = tasks[0].data.test.texts[: len(notes)]
    if args.baseline_batch:
        for t in tasks:
            t.settings = t.settings.model_copy(update={"eval_batch_size": args.baseline_batch})
        b_wall, b_cpu, b_scores = _run(lambda: separate(len(notes)))
        for t in tasks:
            t.settings = t.settings.model_copy(update={"eval_batch_size": stage2["eval_batch_size"]})
    n_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in notes_raw]
    result = {
        "model": MODEL.name, "dtype": args.dtype, "threads": args.threads, "tasks": len(tasks), "notes": len(notes),
        "note_chars": 700, "note_tokens_median": float(np.median(n_tokens)), "note_tokens_max": int(max(n_tokens)),
        "sequence_len": tasks[0].max_length, "notes_cut_for_some_task": sum(
            any(full[t.name][i] != raw for t in tasks) for i, raw in enumerate(notes_raw)),
        "distinct_cut_lists": cut_lists, "groups_sharing_a_prefix": groups[0], "prompt": tasks[0].prompt.style,
        "eval_batch_size": tasks[0].settings.eval_batch_size, "option_chunk": tasks[0].settings.option_chunk,
        "one_prompt_per_task": {"wall_s": round(s_wall, 2), "cpu_s": round(s_cpu, 2)},
        "shared_prefix": {"wall_s": round(j_wall, 2), "cpu_s": round(j_cpu, 2)},
        "ratio_wall": round(j_wall / s_wall, 3), "ratio_cpu": round(j_cpu / s_cpu, 3),
        "speed_up_wall": round(s_wall / j_wall, 2), "max_relative_score_difference": rel,
        "argmax_predictions_differing": flips, "of_predictions": int(s_scores.shape[0] * s_scores.shape[1]),
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "nproc": os.cpu_count(),
        "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability(),
    }
    if args.baseline_batch:
        result["baseline_one_prompt_per_task_batch"] = {
            "eval_batch_size": args.baseline_batch, "wall_s": round(b_wall, 2), "cpu_s": round(b_cpu, 2),
            "max_relative_score_difference": float(np.max(np.abs(b_scores - s_scores) / np.abs(s_scores))),
            "argmax_predictions_differing": int((b_scores.argmax(-1) != s_scores.argmax(-1)).sum())}
    print(f"{len(tasks)} yes/no tasks x {len(notes)} notes ({args.dtype}, {args.threads} thread(s), sequence_len "
          f"{tasks[0].max_length}: {result['notes_cut_for_some_task']} notes cut, {cut_lists} distinct cuts, "
          f"{groups[0]} group(s) sharing a prefix; load {load_before[0]:.1f} on {os.cpu_count()} cores before):")
    print(f"  {'':24} {'wall s':>8} {'CPU s':>8}")
    print(f"  {'one prompt per task':24} {s_wall:8.2f} {s_cpu:8.2f}")
    print(f"  {'shared prefix per note':24} {j_wall:8.2f} {j_cpu:8.2f}")
    print(f"  ratio shared / separate: wall {j_wall / s_wall:.3f}, CPU {j_cpu / s_cpu:.3f} "
          f"(speed-up {s_wall / j_wall:.2f}x); max relative score difference {rel:.2e}, "
          f"{flips} of {result['of_predictions']} argmax predictions differ")
    if args.baseline_batch:
        base = result["baseline_one_prompt_per_task_batch"]
        print(f"  one prompt per task, eval_batch_size {args.baseline_batch} (not {stage2['eval_batch_size']}): max "
              f"relative score difference {base['max_relative_score_difference']:.2e}, "
              f"{base['argmax_predictions_differing']} argmax predictions differ (the batch alone)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
