"""How many head decisions the shared prefixes change (stage2/shared_features.py): the ladder's hallmarks setting
(examples/grids/ladder_1_hallmarks.yml: 10 one-vs-rest tasks, 152 shared test notes, 16 labelled notes a task of
seed 0, the mask-fill prompt), SmolLM2-135M-Instruct in ``--dtype``; each task's head (the package's and the
authors', ``--epochs`` as the ladder's probing) trained on the same labelled-note features, then its argmax on
the test notes with their features read one prompt per (task, note) and read on one prefix per note; the
decisions that differ and each path's Macro F1 against the gold labels. Not a timing: it may run beside other
work.

    python benchmarks/shared_features_decisions.py [--dtype bfloat16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRID = ROOT / "examples" / "grids" / "ladder_1_hallmarks.yml"
MODEL = ROOT / "models" / "smollm2-135m-instruct"
MASK = "<|decselfmask_mask|>"
RESULTS = ROOT / "benchmarks" / "results" / "shared_features_decisions.json"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    import torch
    from axolotl.utils.dict import DictDefault
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig, HeadConfig
    from axolotl_decselfmask.stage2.head import fit_head, head_scores
    from axolotl_decselfmask.stage2.metrics import macro_f1
    from axolotl_decselfmask.stage2.probing import mask_token_id
    from axolotl_decselfmask.stage2.run import prepare_tasks
    from axolotl_decselfmask.stage2.shared_features import prefetch_features, task_feature_requests
    from axolotl_decselfmask.tools.experiments.data import build_data
    from axolotl_decselfmask.tools.experiments.grid import load_grid

    torch.set_num_threads(args.threads)
    grid = load_grid(GRID)
    (corpus,) = grid.corpora
    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    tokenizer.add_special_tokens({"additional_special_tokens": [MASK]})  # the one-token mask, as stage 1 adds it
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=getattr(torch, args.dtype))
    model.resize_token_embeddings(len(tokenizer))
    epochs = grid.decselfmask.get("probing", {}).get("authors_head", {}).get("epochs", 50)
    with tempfile.TemporaryDirectory() as tmp:
        data = build_data(grid, Path(tmp))[corpus.name]
        tasks = [{"task": t.name, "question": t.question, "labels": ["yes", "no"],
                  "train_file": data["tasks"][t.name]["train"][0], "test_file": data["tasks"][t.name]["test"]}
                 for t in corpus.tasks]
        stage2 = dict(grid.decselfmask["classification"], train=True, joint=True, method="head")
        config = DecSelfMaskConfig(items=["x"], masking={"mask_token": MASK}, tasks=tasks, classification=stage2,
                                   probing={"enabled": False})
        cfg = DictDefault({"sequence_len": grid.recipe["sequence_len"], "output_dir": str(Path(tmp) / "out"),
                           "datasets": []})
        prepared = prepare_tasks(cfg, config, tokenizer)
    result = {"model": MODEL.name, "dtype": args.dtype, "tasks": len(prepared), "test_notes": len(prepared[0].test_texts),
              "labelled_per_task": len(prepared[0].train_texts), "heads": {}}
    for style, settings in (("package", HeadConfig(style="package")), ("authors", HeadConfig(style="authors",
                                                                                              epochs=epochs))):
        per_path = {}
        for path in ("one prompt per task", "shared prefix"):
            cache: dict = {}
            if path == "shared prefix":
                for t in prepared:
                    t.settings = t.settings.model_copy(update={"head": settings})
                prefetch_features(model, tokenizer, task_feature_requests(config, prepared, tokenizer), cache,
                                  stage2.get("eval_batch_size", 8), False, stage2.get("option_chunk", 8))
            preds, f1 = {}, {}
            for t in prepared:
                mask_id = mask_token_id(tokenizer, t.prompt.mask_text)
                head = fit_head(model, tokenizer, t.train_texts, t.train_labels, t.data.labels, t.prompt.question,
                                t.prompt.system_prompt, settings, 0, mask_id=mask_id, progress=False,
                                feature_cache=cache)
                scores = head_scores(model, tokenizer, head, t.test_texts, progress=False, feature_cache=cache)
                preds[t.name] = [t.data.labels[i] for i in scores.argmax(1)]
                f1[t.name] = macro_f1(t.gold, preds[t.name], t.data.labels)
            per_path[path] = (preds, f1)
        (a, fa), (b, fb) = per_path["one prompt per task"], per_path["shared prefix"]
        differ = {n: sum(x != y for x, y in zip(a[n], b[n])) for n in a}
        result["heads"][style] = {
            "decisions_differing": sum(differ.values()), "of_decisions": sum(len(v) for v in a.values()),
            "per_task_differing": differ,
            "mean_macro_f1_one_prompt_per_task": sum(fa.values()) / len(fa),
            "mean_macro_f1_shared_prefix": sum(fb.values()) / len(fb)}
        r = result["heads"][style]
        print(f"{style} head: {r['decisions_differing']} of {r['of_decisions']} argmax decisions differ; mean Macro F1 "
              f"{r['mean_macro_f1_one_prompt_per_task']:.4f} (one prompt per task) vs "
              f"{r['mean_macro_f1_shared_prefix']:.4f} (shared prefix)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
