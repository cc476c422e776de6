"""Stage 2 on the development tasks: zero-shot, joint SFT and a head, each with every decision rule.

The development tasks (not used by the comparison of docs/results.md's plan): the five one-vs-rest
tasks of the shipped Medical Abstracts splits, "Is the text above about <class>?" yes/no. The test
split (200 abstracts, 40 per class) gives each task 20% positives, the imbalanced case where a
classifier trained on balanced labels answers "yes" to nearly everything. Per seed, each task gets
16 positive and 16 negative labelled examples (4 from each other class) drawn from the training
split; the calibration's unlabelled notes are the first 128 of the unlabelled split.

Methods (SmolLM2-135M-Instruct, the embedded model, float32, stage 1 off):
- zero_shot: the model as it is (its scores do not depend on the seed; the calibration's
  labelled examples do);
- sft: one joint stage-2 LoRA over the five tasks' 160 examples (the project's stage-2 defaults);
- head: a head per task on the frozen model's last-prompt-token hidden state.
Decisions (stage2/calibration.py): none (argmax), balanced, pool, pool_uncorrected.

Output: benchmarks/results/stage2_dev/ (scores per method and seed, resumable: a finished
(method, seed) is never recomputed), and a table with bootstrap intervals over the test notes
printed and written to benchmarks/results/stage2_dev.md.

    python benchmarks/stage2_dev_tasks.py [--seeds 0 1 2] [--max-length 192]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
OUT = ROOT / "benchmarks" / "results" / "stage2_dev"
MODEL = ROOT / "models" / "smollm2-135m-instruct"
CLASSES = ["neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
           "general pathological conditions"]
OPTIONS = ["yes", "no"]
SYSTEM = "Answer with one of the options."
DECISIONS = ["none", "balanced", "pool", "pool_uncorrected"]
N_POOL = 128


def question(cls: str) -> str:
    return f"Is the text above about {cls}?"


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"abstracts_{name}.jsonl").read_text().splitlines()]


def labelled(train: list[dict], cls: str, seed: int) -> tuple[list[str], list[str]]:
    """16 positives and 16 negatives (4 per other class), drawn with ``seed``, shuffled."""
    rng = np.random.default_rng([seed, CLASSES.index(cls)])
    pos = [r for r in train if r["label"] == cls]
    picked = [pos[i] for i in rng.choice(len(pos), 16, replace=False)]
    for other in CLASSES:
        if other != cls:
            rows = [r for r in train if r["label"] == other]
            picked += [rows[i] for i in rng.choice(len(rows), 4, replace=False)]
    order = rng.permutation(len(picked))
    return [picked[i]["text"] for i in order], ["yes" if picked[i]["label"] == cls else "no" for i in order]


def load_model():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    return model, tok


def cut(tok, texts, max_length):
    from axolotl_decselfmask.args import ClassificationConfig
    from axolotl_decselfmask.stage2.task_prompt import truncate_for

    c = ClassificationConfig(question=question(CLASSES[0]), system_prompt=SYSTEM)
    return truncate_for(tok, c, OPTIONS, max_length, texts)[0]


def scores_of(scorer, sets: dict) -> dict:
    """The scores of the labelled, pool and test notes of one task."""
    return {name: scorer(sets[name]) for name in ("train", "pool", "test")}


def run_zero_shot(model, tok, sets_per_task, progress):
    """The untrained model's scores; those of the pool and test notes (the same for every seed) are
    computed once."""
    from axolotl_decselfmask.stage2.scoring import score_options

    shared_path = OUT / "zero_shot-pool-test.npz"
    shared = dict(np.load(shared_path)) if shared_path.is_file() else {}
    out = {}
    for cls in CLASSES:
        sets = sets_per_task(cls)
        for name in ("train", "pool", "test"):
            key = f"{cls}|{name}"
            if name != "train" and key in shared:
                out[key] = shared[key]
            else:
                out[key] = score_options(model, tok, sets[name], OPTIONS, question(cls), SYSTEM, progress)
    if not shared:
        np.savez_compressed(shared_path, **{k: v for k, v in out.items() if not k.endswith("|train")})
    return out


def run_sft(model, tok, sets_per_task, seed, max_length, progress):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import ClassificationConfig
    from axolotl_decselfmask.stage2.scoring import score_options
    from axolotl_decselfmask.stage2.training import train_classifier, training_rows

    rows = []
    for cls in CLASSES:
        sets = sets_per_task(cls)
        rows += training_rows(tok, sets["train"], sets["train_labels"], OPTIONS, question(cls), SYSTEM)
    cfg = DictDefault({"use_tensorboard": False, "use_wandb": False, "gradient_checkpointing": False})
    settings = ClassificationConfig()
    trainer = train_classifier(cfg, settings, seed, model, tok, rows, max_length, OUT / f"sft-seed{seed}-adapter",
                               progress, f"dev sft seed {seed}")
    merged = trainer.model.merge_and_unload()
    out = {}
    for cls in CLASSES:
        s = scores_of(lambda t: score_options(merged, tok, t, OPTIONS, question(cls), SYSTEM, progress),
                      sets_per_task(cls))
        out.update({f"{cls}|{k}": v for k, v in s.items()})
    return out


def run_head(model, tok, sets_per_task, seed, progress):
    from axolotl_decselfmask.args import HeadConfig
    from axolotl_decselfmask.stage2.head import fit_head, head_scores

    out, features = {}, {}
    for cls in CLASSES:
        sets = sets_per_task(cls)
        head = fit_head(model, tok, sets["train"], sets["train_labels"], OPTIONS, question(cls), SYSTEM, HeadConfig(),
                        seed, position="last", progress=progress, feature_cache=features)
        s = scores_of(lambda t: head_scores(model, tok, head, t, progress=progress, feature_cache=features), sets)
        out.update({f"{cls}|{k}": v for k, v in s.items()})
    return out


def decisions(scores: dict, labels_of: dict) -> dict:
    """Per decision and task: predicted label indices on the test notes."""
    from axolotl_decselfmask.stage2.calibration import Calibration

    out = {}
    for mode in DECISIONS:
        for cls in CLASSES:
            cal = Calibration.fit(mode, OPTIONS, scores[f"{cls}|train"], labels_of[cls],
                                  scores[f"{cls}|pool"] if mode.startswith("pool") else None)
            out[(mode, cls)] = cal.decide(scores[f"{cls}|test"])[0]
    return out


def macro_f1_rows(pred: np.ndarray, gold: np.ndarray, idx: np.ndarray) -> float:
    """Macro F1 over yes/no (index 0/1) of the test notes ``idx``."""
    f = []
    for k in (0, 1):
        tp = np.sum((pred[idx] == k) & (gold[idx] == k))
        fp = np.sum((pred[idx] == k) & (gold[idx] != k))
        fn = np.sum((pred[idx] != k) & (gold[idx] == k))
        f.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f))


def report(results: dict, gold: dict, n_test: int, n_boot: int = 1000) -> str:
    """Mean Macro F1 over tasks and seeds per (method, decision), 95% bootstrap interval over test
    notes (resampled jointly across the tasks, which share them), and the paired difference to the
    zero-shot argmax."""
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, n_test, n_test) for _ in range(n_boot)]
    full = np.arange(n_test)

    lines = ["| method | decision | Macro F1 (mean of 5 tasks x seeds) | 95% CI | minus zero-shot argmax | 95% CI | "
             "share 'yes' |", "| --- | --- | --- | --- | --- | --- | --- |"]
    base = _curve(results, "zero_shot", "none", gold, [full] + boots)
    for method in ("zero_shot", "sft", "head"):
        for mode in DECISIONS:
            curve = _curve(results, method, mode, gold, [full] + boots)
            if curve is None:
                continue
            lo, hi = np.percentile(curve[1:], [2.5, 97.5])
            d = curve - base
            dlo, dhi = np.percentile(d[1:], [2.5, 97.5])
            yes = np.mean([np.mean(p[(mode, c)] == 0) for s, p in results.items() if s[0] == method for c in CLASSES])
            lines.append(f"| {method} | {mode} | {curve[0]:.3f} | {lo:.3f} - {hi:.3f} | {d[0]:+.3f} | "
                         f"{dlo:+.3f} - {dhi:+.3f} | {yes:.2f} |")
    return "\n".join(lines)


def _curve(results, method, mode, gold, samples):
    runs = [p for (m, _), p in results.items() if m == method]
    if not runs:
        return None
    return np.array([np.mean([macro_f1_rows(p[(mode, c)], gold[c], idx) for p in runs for c in CLASSES])
                     for idx in samples])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from axolotl_decselfmask.hardware import decide_precision, environment

    OUT.mkdir(parents=True, exist_ok=True)
    model, tok = load_model()
    train, test, pool = read("train"), read("test"), read("unlabelled")[:N_POOL]
    test_texts = cut(tok, [r["text"] for r in test], args.max_length)
    pool_texts = cut(tok, [r["text"] for r in pool], args.max_length)
    gold = {c: np.array([0 if r["label"] == c else 1 for r in test]) for c in CLASSES}
    results, labels_of_seed = {}, {}
    for seed in args.seeds:
        draws = {c: labelled(train, c, seed) for c in CLASSES}
        draws = {c: (cut(tok, t, args.max_length), y) for c, (t, y) in draws.items()}
        labels_of_seed[seed] = {c: y for c, (_, y) in draws.items()}

        def sets_per_task(cls, draws=draws):
            return {"train": draws[cls][0], "train_labels": draws[cls][1], "pool": pool_texts, "test": test_texts}

        for method in ("zero_shot", "sft", "head"):
            path = OUT / f"{method}-seed{seed}.npz"
            if not path.is_file():
                start = time.time()
                torch.manual_seed(seed)
                if method == "zero_shot":
                    scores = run_zero_shot(model, tok, sets_per_task, args.progress)
                elif method == "sft":
                    fresh, _ = load_model()
                    scores = run_sft(fresh, tok, sets_per_task, seed, args.max_length, args.progress)
                else:
                    scores = run_head(model, tok, sets_per_task, seed, args.progress)
                tmp = path.with_suffix(".tmp.npz")
                np.savez_compressed(tmp, **scores)
                os.replace(tmp, path)
                print(f"{method} seed {seed}: {time.time() - start:.0f} s", flush=True)
            loaded = dict(np.load(path))
            results[(method, seed)] = decisions(loaded, labels_of_seed[seed])
    env = environment(decide_precision(False))
    table = report(results, gold, len(test))
    text = (f"Seeds {args.seeds}; {len(test)} test notes (20% positives per task), 16 + 16 labels per task, "
            f"{N_POOL} pool notes; notes cut to {args.max_length} prompt tokens. Machine: "
            f"{env.get('cpu_capability')}, torch {env.get('torch')}, {env.get('threads')} threads.\n\n{table}\n")
    print(text)
    (ROOT / "benchmarks" / "results" / "stage2_dev.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
