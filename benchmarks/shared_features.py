"""The heads' features of one-vs-rest tasks that share their test notes (stage2/shared_features.py): the 22
yes/no tasks of examples/grids/comparison_core_mtsamples.yml on ``--notes`` mtsamples notes (built as
benchmarks/shared_prefix_tasks.py builds them: the grid's questions, the mask-fill prompt with the one-token
mask), each task's features read one prompt per (task, note) (:func:`.probing.prompt_features`, as before)
against all tasks on one prefix per note (:func:`.shared_features.shared_prompt_features`, what a run's
prefetch does now), side by side in one run, for the package head's prompt (chat, last token) and the
authors' (raw text, last token); with the largest relative difference of the features. And the string-match
pass (stage2/string_match.py ``teacher_forced_argmax``): each task's row per note (its chat prompt and an
answer, every token labelled), one forward per row against one prefix per note (``groups``), with the argmax
ids that differ.

SmolLM2-135M-Instruct in ``--dtype`` (bfloat16: the grids' ``bf16: auto`` on a CPU with AMX); each path once
after a warm-up on 2 notes; wall and process CPU seconds. Run it with nothing else on the cores.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/shared_features.py [--notes 16] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from shared_prefix_tasks import MASK, MODEL, _run, _tasks  # noqa: E402  (the same tasks as that benchmark)

RESULTS = ROOT / "benchmarks" / "results" / "shared_features.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--sequence-len", type=int, default=320, help="320: no note is cut (the grid's 224 cuts some)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2.probing import prompt_features
    from axolotl_decselfmask.stage2.shared_features import shared_prompt_features

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK]})
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=getattr(torch, args.dtype))
    model.resize_token_embeddings(len(tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        tasks, stage2 = _tasks(Path(tmp), tokenizer, args.notes, None, args.sequence_len)
    notes = tasks[0].test_texts
    questions = [t.prompt.question for t in tasks]
    labels, system = tasks[0].data.labels, tasks[0].prompt.system_prompt
    batch = stage2["eval_batch_size"]
    load_before = os.getloadavg()
    parts = {}
    for name, prompt in (("package head (chat prompt)", "chat"), ("authors' head (raw text)", "raw")):
        def separate(n, prompt=prompt):
            return torch.stack([prompt_features(model, tokenizer, notes[:n], labels, q, system, batch, False,
                                                prompt=prompt) for q in questions], 1)

        def shared(n, prompt=prompt):
            return shared_prompt_features(model, tokenizer, notes[:n], questions, labels, system, prompt=prompt,
                                          batch_size=batch, progress=False)

        separate(2), shared(2)  # warm-up
        s_wall, s_cpu, s_feats = _run(lambda: separate(len(notes)))
        j_wall, j_cpu, j_feats = _run(lambda: shared(len(notes)))
        rel = float(((j_feats - s_feats).norm(dim=-1) / s_feats.norm(dim=-1)).max())
        parts[name] = {"prompt": prompt, "one_prompt_per_task": {"wall_s": round(s_wall, 2), "cpu_s": round(s_cpu, 2)},
                       "shared_prefix": {"wall_s": round(j_wall, 2), "cpu_s": round(j_cpu, 2)},
                       "ratio_cpu": round(j_cpu / s_cpu, 3), "speed_up_wall": round(s_wall / j_wall, 2),
                       "max_relative_feature_difference": rel}
    # the authors' string-match pass: each task's row (the chat prompt and its gold answer, every token labelled)
    # per note, the argmax at every position: one forward per row against one prefix per note
    from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training
    from axolotl_decselfmask.stage2.string_match import teacher_forced_argmax

    rows, groups = [], []
    for t in tasks:
        for note in notes:
            rows.append(tokenize_for_training(tokenizer, classification_messages(
                note, t.prompt.question, labels, system, answer="no"), train_on_inputs=True))
            groups.append(note)

    def sm_separate(n):
        return teacher_forced_argmax(model, tokenizer, [r for r, g in zip(rows, groups) if g in notes[:n]], batch,
                                     shift=False)[0]

    def sm_shared(n):
        keep = [i for i, g in enumerate(groups) if g in notes[:n]]
        return teacher_forced_argmax(model, tokenizer, [rows[i] for i in keep], batch, shift=False,
                                     groups=[groups[i] for i in keep], row_chunk=stage2.get("option_chunk", 8))[0]

    sm_separate(2), sm_shared(2)  # warm-up
    s_wall, s_cpu, s_ids = _run(lambda: sm_separate(len(notes)))
    j_wall, j_cpu, j_ids = _run(lambda: sm_shared(len(notes)))
    positions = sum(len(x) for x in s_ids)
    same = sum(a == b for x, y in zip(s_ids, j_ids) for a, b in zip(x, y))
    # what the scorer reads: the answer after the assistant header; and bfloat16's own batch noise beside it
    from axolotl_decselfmask.stage2.string_match import answer_string, header_and_special

    header, special, _, _ = header_and_special(tokenizer)
    b1_ids = teacher_forced_argmax(model, tokenizer, rows, 1, shift=False)[0]

    def answers(ids):
        return [answer_string(x, header, special) for x in ids]

    parts_answers = {"answers_differing_shared": sum(a != b for a, b in zip(answers(s_ids), answers(j_ids))),
                     "answers_differing_batch_1_vs_%d" % batch: sum(a != b for a, b in zip(answers(s_ids),
                                                                                            answers(b1_ids))),
                     "argmax_positions_differing_batch_1_vs_%d" % batch: sum(
                         a != b for x, y in zip(s_ids, b1_ids) for a, b in zip(x, y))}
    parts["string match (every position's argmax)"] = {**parts_answers,
        "prompt": "chat+answer", "one_prompt_per_task": {"wall_s": round(s_wall, 2), "cpu_s": round(s_cpu, 2)},
        "shared_prefix": {"wall_s": round(j_wall, 2), "cpu_s": round(j_cpu, 2)},
        "ratio_cpu": round(j_cpu / s_cpu, 3), "speed_up_wall": round(s_wall / j_wall, 2),
        "argmax_positions_differing": positions - same, "of_positions": positions,
        "rows_differing": sum(x != y for x, y in zip(s_ids, j_ids)), "of_rows": len(s_ids)}
    result = {"model": MODEL.name, "dtype": args.dtype, "threads": args.threads, "tasks": len(tasks),
              "notes": len(notes), "sequence_len": args.sequence_len, "eval_batch_size": batch, "parts": parts,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "nproc": os.cpu_count(),
              "torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}
    print(f"features of {len(tasks)} tasks x {len(notes)} notes ({args.dtype}, {args.threads} thread(s), "
          f"load {load_before[0]:.1f} on {os.cpu_count()} cores before):")
    print(f"  {'':28} {'separate wall/CPU s':>20} {'shared wall/CPU s':>18} {'CPU ratio':>9} {'max rel. diff':>13}")
    for name, p in parts.items():
        s, j = p["one_prompt_per_task"], p["shared_prefix"]
        diff = (f"{p['max_relative_feature_difference']:13.2e}" if "max_relative_feature_difference" in p else
                f"  {p['argmax_positions_differing']} of {p['of_positions']} argmax ids, answers "
                f"{p['answers_differing_shared']} of {p['of_rows']} (batch 1 vs {batch}: "
                f"{p['argmax_positions_differing_batch_1_vs_%d' % batch]} ids, "
                f"{p['answers_differing_batch_1_vs_%d' % batch]} answers)")
        print(f"  {name:28} {s['wall_s']:9.2f} {s['cpu_s']:9.2f} {j['wall_s']:8.2f} {j['cpu_s']:8.2f} "
              f"{p['ratio_cpu']:9.3f} {diff}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
