"""What the many-task comparison (issue 14) costs per unit, on the embedded SmolLM2-135M-Instruct:
the measurements the compute estimate of docs/results.md ("## Plan") rests on.

- **stage-2 step**: one optimiser step of a fresh LoRA (r 32, alpha 64, dropout 0.05, every linear
  layer: the stage-2 defaults) on a batch of mask-fill prompts with their answer (a label question
  of the note, the one-token mask, the yes/no options), forward + backward + AdamW, padded to the
  longest; also reported per 1,000 tokens;
- **evaluation**: the multi-label scoring (stage2/scoring.py ``score_questions``: one shared prefix
  per note, each label question and answer on a copy of its key/value cache) with 1 and with Q label
  questions, so the cost per note (the prefix) and per (note, question) follow; and the same Q questions
  scored as one prompt each (stage2/scoring.py ``score_options``), the speed-up of the shared prefix;
- **relevance**: seconds per (note, item) of gradient x input (``sum_logprob``, question prompt: the
  project's defaults) and of AttnLRP (``max_logit``, completion prompt: ``protocol: paper``).

Notes are the first ``--notes`` texts of ``--corpus`` (a gzip CSV of ../shared/data), cut to
``--note-tokens`` tokens at a word boundary. ``--threads`` torch threads (default 1, so that a shared
machine's other jobs are disturbed little; the step on 2 threads is about 1.3x faster, see
benchmarks/results/profile_stage1_step.txt). Each number is the median of ``--repeats`` timed runs
after one warm-up run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/comparison_costs.py [--dtypes bfloat16,float32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = ROOT / "models" / "smollm2-135m-instruct"
CORPUS = ROOT.parent / "shared" / "data" / "mtsamples.csv.gz"
QUESTION = "Is the note above about {label}?"
MASK = "<|decselfmask_mask|>"


def _notes(path: Path, n: int, tokens: int, tokenizer) -> tuple[list[str], list[str]]:
    """The first ``n`` texts, each cut to ``tokens`` tokens at a word boundary; and the corpus' labels."""
    from axolotl_decselfmask.io.label_sets import parse_label_set
    from axolotl_decselfmask.io.tables import read_table

    rows = read_table(path, "--corpus")
    column = "specialties" if "specialties" in rows[0] else "hallmarks"
    counts: dict[str, int] = {}
    for r in rows:
        for y in parse_label_set(r.get(column), ";"):
            counts[y] = counts.get(y, 0) + 1
    labels = sorted(y for y, k in counts.items() if k >= 50)  # the grids' min_class_rows
    notes = []
    for r in rows[:n]:
        text = " ".join(str(r["text"]).split())
        ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(ids["input_ids"]) > tokens:
            end = ids["offset_mapping"][tokens][0]
            text = text[:end].rsplit(" ", 1)[0]
        notes.append(text)
    return notes, labels


CPU_SECONDS: list[float] = []  # process CPU time of each timed call, in order (the work, which load moves less)


def _timed(fn, repeats: int) -> float:
    """Median wall seconds of ``repeats`` calls after a warm-up; their median CPU seconds go to CPU_SECONDS."""
    fn()  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    CPU_SECONDS.append(statistics.median(cpu))
    return statistics.median(times)


def _cpu() -> float:
    """CPU seconds of the last timed call."""
    return CPU_SECONDS[-1]


def _prompt_ids(tokenizer, note: str, label: str, system: str) -> list[int]:
    from axolotl_decselfmask.prompts import (
        classification_messages,
        mask_fill_question,
        render,
    )

    turns = render(tokenizer, classification_messages(note, mask_fill_question(QUESTION.format(label=label), MASK),
                                                      ["yes", "no"], system, answer="yes"))
    return tokenizer(turns.prompt + turns.answer, add_special_tokens=False)["input_ids"]


def stage2_step(model, tokenizer, notes, labels, batch: int, repeats: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from axolotl_decselfmask.args import DEFAULT_MASK_SYSTEM

    rows = [_prompt_ids(tokenizer, n, labels[i % len(labels)], DEFAULT_MASK_SYSTEM) for i, n in enumerate(notes)]
    rows = rows[:batch]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    labels_t = ids.masked_fill(mask == 0, -100)
    peft = get_peft_model(model, LoraConfig(r=32, lora_alpha=64, lora_dropout=0.05, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.001)
    peft.train()

    def step():
        loss = peft(input_ids=ids, attention_mask=mask, labels=labels_t).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = _timed(step, repeats)
    cpu = _cpu()
    peft.unload()
    tokens = int(mask.sum())
    return {"batch": len(rows), "padded_width": width, "tokens": tokens, "s_per_step": round(seconds, 3),
            "s_per_1k_tokens": round(1000 * seconds / tokens, 3), "cpu_s_per_1k_tokens": round(1000 * cpu / tokens, 3),
            "mean_row_tokens": round(tokens / len(rows), 1)}


def evaluation(model, tokenizer, notes, labels, repeats: int, batch_size: int = 8, option_chunk: int = 8) -> dict:
    from axolotl_decselfmask.args import DEFAULT_MASK_SYSTEM
    from axolotl_decselfmask.stage2.scoring import score_options, score_questions

    questions = [f"{QUESTION.format(label=y)} {MASK}" for y in labels]
    one = _timed(lambda: score_questions(model, tokenizer, notes, questions[:1], ["yes", "no"], DEFAULT_MASK_SYSTEM,
                                         False, batch_size, option_chunk), repeats)
    one_cpu = _cpu()
    many = _timed(lambda: score_questions(model, tokenizer, notes, questions, ["yes", "no"], DEFAULT_MASK_SYSTEM,
                                          False, batch_size, option_chunk), repeats)
    many_cpu = _cpu()
    few = notes[: max(2, len(notes) // 4)]  # one prompt per (note, question): slower, so fewer notes
    separate = _timed(lambda: [score_options(model, tokenizer, few, ["yes", "no"], q, DEFAULT_MASK_SYSTEM,
                                             progress=False) for q in questions], 1)
    per_pair = (many - one) / (len(notes) * (len(questions) - 1))
    per_note = one / len(notes) - per_pair
    cpu_pair = (many_cpu - one_cpu) / (len(notes) * (len(questions) - 1))
    return {"notes": len(notes), "questions": len(questions), "eval_batch_size": batch_size,
            "option_chunk": option_chunk, "s_one_question": round(one, 3),
            "s_all_questions": round(many, 3), "s_per_note_prefix": round(per_note, 4),
            "s_per_note_question": round(per_pair, 4),
            "cpu_s_per_note_prefix": round(one_cpu / len(notes) - cpu_pair, 4),
            "cpu_s_per_note_question": round(cpu_pair, 4),
            "s_per_note_all_questions_shared": round(many / len(notes), 4),
            "s_per_note_all_questions_separate": round(separate / len(few), 4),
            "speed_up": round((separate / len(few)) / (many / len(notes)), 2)}


def relevance(model, tokenizer, notes, labels, repeats: int) -> dict:
    from axolotl_decselfmask.args import DEFAULT_COMPLETION_LEAD_IN, DEFAULT_LEAD_IN
    from axolotl_decselfmask.compat import attn_implementation, restore_attention
    from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    out = {}
    arms = {"grad_x_input:sum_logprob:question": ("grad_x_input", "sum_logprob", "question", DEFAULT_LEAD_IN),
            "attnlrp:max_logit:completion": ("attnlrp", "max_logit", "completion", DEFAULT_COMPLETION_LEAD_IN)}
    for name, (method_name, target, style, lead_in) in arms.items():
        prompts = [build_relevance_prompt(tokenizer, n, labels[i % len(labels)], lead_in, style)
                   for i, n in enumerate(notes)]
        method = BUILTIN_METHODS[method_name](model, tokenizer, target, "middle", steps=32)
        before = attn_implementation(model)
        try:
            seconds = _timed(lambda: compute_relevance(method, prompts, 4), repeats)
        finally:
            restore_attention(model, before)
        out[name] = {"prompts": len(prompts),
                     "mean_prompt_tokens": round(statistics.mean(len(p.input_ids) for p in prompts), 1),
                     "s_per_note_item": round(seconds / len(prompts), 4),
                     "cpu_s_per_note_item": round(_cpu() / len(prompts), 4)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--notes", type=int, default=16)
    parser.add_argument("--note-tokens", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--eval-batch", type=int, default=8, help="classification.eval_batch_size")
    parser.add_argument("--option-chunk", type=int, default=8, help="classification.option_chunk")
    parser.add_argument("--parts", default="step,evaluation,relevance")
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK]})  # the one-token mask, as stage 1 adds it
    notes, labels = _notes(Path(args.corpus), args.notes, args.note_tokens, tokenizer)
    result = {"model": Path(args.model).name, "corpus": Path(args.corpus).name, "note_tokens": args.note_tokens,
              "threads": args.threads, "load_average_before": os.getloadavg(), "torch": torch.__version__,
              "cpu": torch.backends.cpu.get_cpu_capability(), "by_dtype": {}}
    parts = args.parts.split(",")
    for dtype in args.dtypes.split(","):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, dtype))
        model.resize_token_embeddings(len(tokenizer))
        got = {}
        if "evaluation" in parts:
            got["evaluation"] = evaluation(model, tokenizer, notes, labels, args.repeats, args.eval_batch,
                                           args.option_chunk)
        if "relevance" in parts:
            got["relevance"] = relevance(model, tokenizer, notes, labels, args.repeats)
        if "step" in parts:
            got["stage2_step"] = stage2_step(model, tokenizer, notes, labels, args.batch, args.repeats)
        result["by_dtype"][dtype] = got
        print(json.dumps({dtype: got}, indent=1), flush=True)
    result["load_average_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
