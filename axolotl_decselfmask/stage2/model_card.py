"""The model card: ``<output_dir>/README.md`` after stage 2 and the evaluation.

It says what was trained and how well it did, from what the run left behind: the base model,
the relevance method and its settings, the tasks, the data sizes (unlabelled texts and masked
examples from the precompute cache's manifest, labelled and test rows from ``metrics.json``),
the metrics, the recipe (secrets removed) and the citation. Every piece is optional: a missing
file or key leaves a line saying so instead of stopping the run. It replaces the generic card
that the Trainer writes into ``output_dir``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from axolotl_decselfmask.io.files import read_json
from axolotl_decselfmask.mask_token import describe_for_run
from axolotl_decselfmask.stage1.budget import STATS_FILE
from axolotl_decselfmask.stage1.cache import MANIFEST_FILE, read_manifest
from axolotl_decselfmask.stage2.outputs import read_metrics
from axolotl_decselfmask.version import __version__

LOG = logging.getLogger(__name__)

CARD = "README.md"
PAPER = "https://arxiv.org/abs/2606.09466"
BIBTEX = """\
@misc{ferrazzi2026decselfmask,
  title         = {DecSelfMask: Decoder Self-learning by Masking},
  author        = {Ferrazzi and Merler and Bonetta and Lavelli and Magnini},
  year          = {2026},
  eprint        = {2606.09466},
  archivePrefix = {arXiv}
}"""

REDACTED = "<redacted>"
# Key names that hold credentials (not `tokens`, `mask_token`, `eos_token`, `stage1_token_budget`).
_SECRET_KEY = re.compile(
    r"(api[_-]?key|secret|passw(or)?d|credential|access[_-]?key|private[_-]?key|auth"
    r"|(^|_)(hf|hub|wandb|mlflow|comet|github|gh|openai|neptune|swanlab)_?(api_)?token)$",
    re.IGNORECASE,
)
# Values that look like a credential whatever their key is called.
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{20,}|xox[bp]-\S+)$")


def redact(value: Any, key: str = "") -> Any:
    """``value`` with credentials replaced by ``<redacted>`` (nested dicts and lists)."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and (_SECRET_KEY.search(key) or _SECRET_VALUE.match(value.strip())):
        return REDACTED
    return value


def recipe_yaml(cfg) -> str:
    """The recipe as YAML, secrets removed: the file the run was started with when it can be read,
    else the (validated) cfg without its unset keys."""
    import yaml

    path = _get(cfg, "axolotl_config_path")
    recipe = None
    if path and Path(str(path)).is_file():
        try:
            recipe = yaml.safe_load(Path(str(path)).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - fall back to the cfg
            recipe = None
    if not isinstance(recipe, dict):
        recipe = _plain(cfg)
        recipe = {k: v for k, v in recipe.items() if v is not None and k != "axolotl_config_path"}
    return yaml.safe_dump(redact(recipe), sort_keys=False, allow_unicode=True, width=100)


def _plain(value: Any) -> Any:
    """JSON-safe copy of a cfg (DictDefault, pydantic models, paths)."""
    if not isinstance(value, dict) and callable(getattr(value, "model_dump", None)):  # a DictDefault answers None
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _get(cfg, key: str, default=None):
    try:
        value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    except Exception:  # noqa: BLE001
        return default
    return default if value is None else value


def base_model_licence(base_model: str | None) -> str | None:
    """The base model's licence when its folder says it (embedded-model record, card front
    matter, config); None when unknown."""
    if not base_model:
        return None
    folder = Path(str(base_model))
    record = read_json(folder / "decselfmask_materialised.json")
    if isinstance(record, dict) and record.get("licence"):
        return str(record["licence"])
    card = folder / "README.md"
    if card.is_file():
        try:
            text = card.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
        if m:
            lic = re.search(r"^license:\s*(\S.*)$", m.group(1), re.M)
            if lic:
                return lic.group(1).strip().strip("'\"")
    return None


def run_manifest(output_dir) -> tuple[Path, dict] | None:
    """The precompute manifest of the run in ``output_dir``: the stage-1 dataset type records the
    examples folder it used in the run's stage-1 statistics, so runs that share a cache each
    name their own (None when the run kept no examples file or stage 1 was off)."""
    stats = read_json(Path(str(output_dir)) / STATS_FILE)
    folder = stats.get("examples_dir") if isinstance(stats, dict) else None
    if not folder:
        return None
    manifest = read_manifest(Path(folder))
    if not manifest or not manifest.get("complete"):
        return None
    return Path(folder) / MANIFEST_FILE, manifest


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_card(cfg, config=None, metrics: dict | None = None, manifest: tuple[Path, dict] | None = None,
                shared: str | None = None) -> str:
    """The card's Markdown. ``config`` is the plugin's :class:`DecSelfMaskConfig` (or None).
    ``shared``: the card of the folder to share (:mod:`.hub`), whose root is ``shared``
    (``classifier`` or ``stage-1 model``); else the card of ``output_dir``."""
    tasks = (metrics or {}).get("tasks") or {}
    stage1 = config.stage1 if config is not None else True
    files = _shared_files(config, shared, cfg) if shared else _files(cfg, stage1)
    sections = [
        _front_matter(cfg, config, tasks, shared), _intro(cfg, stage1), files, _settings(cfg, config, stage1),
        _data(cfg, config, tasks, manifest, stage1), _results(tasks, metrics), _environment(tasks),
        _licence(cfg), _recipe(cfg), _citation(),
    ]
    return "\n".join(line for section in sections for line in section) + "\n"


#: a Hub model id (``name`` or ``owner/name``); the Hub refuses other ``base_model`` values
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


#: what every card's tags say: what the model is (a causal LM that classifies by scoring its
#: label options; no transformers pipeline runs it as a classifier) and how it loads
TAGS = ["axolotl", "decselfmask", "few-shot", "classifier-by-option-scoring"]


def card_data(cfg, config=None, tasks: dict | None = None, shared: str | None = None):
    """The card's metadata as ``huggingface_hub.ModelCardData``: licence, library, tags, the base
    model when it is a Hub id (a local folder is named in the text only), and a ``model-index``
    with one result per task: its Macro F1 on its test rows. No ``pipeline_tag``: no transformers
    pipeline turns the model into the classifier (the decision files and the prompt do). The
    shared folder's root loads with transformers' ``AutoModelForCausalLM``; ``output_dir``'s root
    is stage 1 (a PEFT adapter with a LoRA)."""
    from huggingface_hub import EvalResult, ModelCardData

    base = str(_get(cfg, "base_model") or "")
    licence = base_model_licence(base)
    on_hub = bool(_HUB_ID.match(base)) and not Path(base).exists()
    name = (config.hub_model_id if config is not None and config.hub_model_id else None) or \
        Path(str(_get(cfg, "output_dir", "model"))).name
    configs = {c.task: c for c in config.task_configs()} if config is not None else {}
    results = [
        EvalResult(task_type="text-classification", task_name="Text classification", dataset_type=task,
                   dataset_name=task, dataset_split="test" if not getattr(configs.get(task), "test_fraction", None)
                   else f"test_fraction {configs[task].test_fraction}", metric_type="f1", metric_name="Macro F1",
                   metric_value=round(float(entry["macro_f1"]), 4))
        for task, entry in (tasks or {}).items() if isinstance(entry.get("macro_f1"), (int, float))
    ]
    four_bit = bool(shared) and _adapter_root(cfg, config)
    peft_root = four_bit or (not shared and bool(_get(cfg, "adapter")))
    load = (["load-with-autopeftmodelforcausallm", "4-bit"] if four_bit else ["load-with-automodelforcausallm"]) \
        if shared else (["stage1-adapter"] if peft_root else [])
    return ModelCardData(base_model=base if on_hub else None, license=licence.lower() if licence else "unknown",
                         library_name="peft" if peft_root else "transformers", tags=TAGS + load,
                         model_name=name, eval_results=results or None)


def _front_matter(cfg, config=None, tasks: dict | None = None, shared: str | None = None) -> list[str]:
    return ["---", card_data(cfg, config, tasks, shared).to_yaml().rstrip(), "---", ""]


def _adapter_root(cfg, config) -> bool:
    """The shared folder's root is a PEFT adapter loaded in 4 bits (a QLoRA run), not a whole model."""
    from axolotl_decselfmask.stage2.quantized import is_adapter_folder, uses_4bit

    if not uses_4bit(cfg) or config is None:
        return False
    c = config.classification
    out = _get(cfg, "output_dir")
    return bool((c.train and c.method != "head" and c.joint) or (config.stage1 and out and is_adapter_folder(out)))


def _load_code(cfg, config) -> list[str]:
    """The one call that loads the shared folder's root: ``AutoModelForCausalLM``, or for a QLoRA
    run ``AutoPeftModelForCausalLM`` with the run's own 4-bit quantisation (the quantised weights
    the adapter was trained and scored on)."""
    if not _adapter_root(cfg, config):
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'model = AutoModelForCausalLM.from_pretrained("REPO_OR_FOLDER")',
                'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")', "```"]
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.stage2.quantized import bnb_config

    dtype = recipe_precision(cfg).torch_dtype()
    q = bnb_config(cfg, dtype)
    settings = ", ".join([f'bnb_4bit_quant_type="{q.bnb_4bit_quant_type}"',
                          f"bnb_4bit_use_double_quant={q.bnb_4bit_use_double_quant}",
                          f"bnb_4bit_compute_dtype=torch.{str(q.bnb_4bit_compute_dtype).split('.')[-1]}",
                          f"bnb_4bit_quant_storage=torch.{str(q.bnb_4bit_quant_storage).split('.')[-1]}"])
    return ["```python", "import torch", "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer, BitsAndBytesConfig", "",
            'model = AutoPeftModelForCausalLM.from_pretrained(',
            f'    "REPO_OR_FOLDER", dtype=torch.{str(dtype).split(".")[-1]},',
            f"    quantization_config=BitsAndBytesConfig(load_in_4bit=True, {settings}))",
            'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")', "```"]


def _shared_files(config, root: str, cfg=None) -> list[str]:
    """The shared folder's files and the one call that loads its root (:mod:`.hub`)."""
    four_bit = cfg is not None and _adapter_root(cfg, config)
    base = _get(cfg, "base_model") if cfg is not None else None
    if four_bit:
        what = (f"one PEFT adapter on `{base}` loaded in 4 bits (QLoRA): stage 1's LoRA and the stage-2 LoRA "
                "stacked into one, with stage 1's trained mask-token row, the model the evaluation scored; nothing "
                "was merged into 4 bits. `AutoPeftModelForCausalLM` loads the base model, grows its embedding to "
                "the tokenizer here (which has the mask token) and puts the adapter on it; the base model must be "
                "reachable under that name"
                if root == "classifier" else
                f"the stage-1 LoRA adapter on `{base}`, loaded in 4 bits (QLoRA), on which the classification "
                "heads or prompts run")
    else:
        what = ("the classifier: the base model with stage 1 applied and the stage-2 LoRA merged in, the model "
                "the evaluation scored" if root == "classifier" else
                "the stage-1 model, on which the classification heads or prompts run")
    lines = ["## How to load", "", *_load_code(cfg, config), "",
             f"The root is {what}. It is a causal language model: it classifies a note by scoring each label "
             "option as the answer to the task's prompt, then applies the task's fitted decision "
             "(`stage2/calibration-<task>.json`); a text-classification pipeline cannot run it. To label notes "
             "as the run did, download the repository and run, inside it, "
             "`axolotl decselfmask predict predict.yml NOTES.jsonl --out labels.jsonl`.", "",
             "## Files", "",
             ("- `./`: the adapter (`adapter_config.json`, `adapter_model.safetensors`) and the tokenizer" if four_bit
              else "- `./`: the model (`config.json`, `model.safetensors`) and its tokenizer"),
             "- `stage2/calibration-<task>.json`: each task's decision (`multilabel-<task>.json`, `heads/` where the "
             "run has them)",
             "- `metrics.json`, `predictions-<task>.jsonl`: the evaluation; `split-<task>.json`: the rows of each side "
             "with `classification.test_fraction`",
             "- `recipe.yml`: the training recipe; `predict.yml`: the recipe `predict` runs with in this folder",
             "- the stage-1 model alone (the mask-filler) is not here: Axolotl's own `hub_model_id` pushes it, "
             "to another repository", ""]
    c = config.classification if config is not None else None
    if c is not None and c.train and c.method != "head" and not c.joint:
        on = f"`{base}` as its base (stage 1 in it), loaded as above" if _uses_4bit(cfg) else \
            "this repository as its base"
        lines[-1:-1] = [f"- `stage2/<task>/`: each task's LoRA, with {on}: "
                        '`AutoPeftModelForCausalLM.from_pretrained("REPO", subfolder="stage2/<task>")`']
    return lines


def _uses_4bit(cfg) -> bool:
    from axolotl_decselfmask.stage2.quantized import uses_4bit

    return cfg is not None and uses_4bit(cfg)


def _intro(cfg, stage1: bool) -> list[str]:
    base = _get(cfg, "base_model")
    return [
        f"# {Path(str(_get(cfg, 'output_dir', 'model'))).name}: DecSelfMask classifier", "",
        f"A few-label text classifier built from `{base}` with DecSelfMask ([paper]({PAPER})), "
        f"by the `axolotl-decselfmask` {__version__} Axolotl plugin. "
        + ("Stage 1 taught the model to reconstruct the words of unlabelled texts that matter most for "
           "the task items (masked reconstruction, guided by the model's own relevance scores); "
           if stage1 else "Stage 1 was switched off (`decselfmask.stage1: false`): this is the plain-SFT baseline; ")
        + "stage 2 fine-tuned a LoRA classifier on the labelled examples (or a head on the frozen model's "
          "hidden states), and the test set was scored by constrained scoring of the label options, with a "
          "decision calibrated without the test file.",
        "",
    ]


def _files(cfg, stage1: bool) -> list[str]:
    adapter = _get(cfg, "adapter") or "full fine-tuning"
    return [
        "## Files", "",
        f"- `./`: the stage-1 weights ({adapter}{' adapter' if _get(cfg, 'adapter') else ''}) on `{_get(cfg, 'base_model')}`",
        "- `stage2/`: the stage-2 classifier, a LoRA adapter whose base is the stage-1 model"
        + (" (`stage1_merged/` for a stage-1 LoRA, so that `AutoPeftModelForCausalLM.from_pretrained('stage2')` "
           "loads both)" if stage1 else " (the base model)")
        + "; one adapter over every task, or one sub-folder per task with `classification.joint: false`; "
          "`stage2/heads/` with `classification.method: head`",
        "- `stage2/calibration-<task>.json`: each task's fitted decision, which "
        "`axolotl decselfmask predict RECIPE NOTES --out FILE` applies to new notes",
        "- `metrics.json`, `predictions-<task>.jsonl`: the evaluation; `split-<task>.json`: the rows of each side "
        "with `classification.test_fraction`", "",
    ]


def _cell(value) -> str:
    """A table cell: ``|`` escaped (token texts such as ``<|im_end|>`` keep it)."""
    return str(value).replace("|", "\\|")


def _settings(cfg, config, stage1: bool) -> list[str]:
    lines = ["## Method and settings", ""]
    if config is None:
        return lines + ["The plugin settings could not be read; see the recipe below.", ""]
    adapter = _get(cfg, "adapter") or "full fine-tuning"
    r, s, m = config.relevance, config.spans, config.masking
    rows = [
        ("relevance method", f"`{r.method}`" + (f" ({r.ig_steps} steps)" if r.method == "integrated_gradients" else "")),
        ("relevance target", f"`{r.target}`" + (f" ({r.token_position} token)" if r.target != "sum_logprob" else "")),
        ("lead-in", r.lead_in + (" (completion style)" if r.prompt_style == "completion" else "")),
        ("task items", ", ".join(config.task_items()) or "(none)"),
        ("items per text", config.items_per_text),
        ("span selector", f"`{s.selector}`"
         + (f" (sigma {s.sigma}, high {s.high}, low {s.low}, truncate {s.truncate})"
            if s.selector == "hysteresis" else "")),
        ("mask token", describe_for_run(cfg, config)),
        ("spans per example", m.spans_per_example),
        ("stage 1", f"{adapter}, {_get(cfg, 'num_epochs', '?')} epoch(s)"
         + (f", max {_get(cfg, 'max_steps')} steps" if _get(cfg, "max_steps") else "")
         + f", learning rate {_get(cfg, 'learning_rate', '?')}" if stage1 else "off (plain-SFT baseline)"),
    ]
    c = config.classification
    if not c.train:
        stage2 = "not trained (zero-shot evaluation)"
    elif c.method == "head":
        stage2 = f"a head per task ({c.head.hidden_size} hidden units, {c.head.epochs} epochs) on the frozen model"
    else:
        steps = f"max {c.max_steps} steps" if c.max_steps else f"{c.num_epochs:g} epoch(s)"
        stage2 = (f"{'one LoRA over every task' if c.joint else 'one LoRA per task'}, r {c.lora_r}, alpha "
                  f"{c.lora_alpha}, learning rate {c.learning_rate}, {c.lr_scheduler}, batch {c.batch_size} x "
                  f"{c.gradient_accumulation_steps}, {steps}, loss on "
                  + ("the whole prompt" if c.train_on_inputs else "the label"))
    rows += [("protocol", config.protocol), ("stage 2", stage2), ("classification prompt", f"`{c.prompt}`"),
             ("decision", f"calibration `{c.calibration}`")]
    return lines + ["| setting | value |", "| --- | --- |"] + [
        f"| {k} | {_cell(v)} |" for k, v in rows] + [""]


def _data(cfg, config, tasks: dict, manifest, stage1: bool) -> list[str]:
    lines = ["## Data", ""]
    if manifest is not None:
        path, man = manifest
        lines.append(f"- unlabelled texts: {man.get('n_texts', '?')}, giving {man.get('n_examples', '?')} "
                     f"masked examples ({man.get('n_without_spans', 0)} (text, item) pairs without a span; "
                     f"cache `{path.parent}`)")
    elif stage1:
        lines.append("- unlabelled texts and masked examples: not found (this run's stage-1 statistics name no "
                     "finished precompute)")
    stats = read_json(Path(str(_get(cfg, "output_dir", "."))) / STATS_FILE) if stage1 else None
    if isinstance(stats, dict) and "examples" in stats:
        budget = f" within the token budget {stats['budget']}" if stats.get("budget") else ""
        lines.append(f"- stage-1 training rows: {stats['examples']} ({stats.get('tokens', '?')} tokens{budget}; "
                     f"dataset type `{stats.get('dataset_type', '?')}`)")
    pools = [d.get("path") for d in (_get(cfg, "datasets") or []) if isinstance(d, dict)]
    if pools and stage1:
        lines.append(f"- unlabelled pool: {', '.join(f'`{p}`' for p in pools)}")
    configs = {c.task: c for c in config.task_configs()} if config is not None else {}
    for name in list(dict.fromkeys([*configs, *tasks])):
        entry, c = tasks.get(name, {}), configs.get(name)
        n_train = entry.get("n_train", "?")
        files = "" if c is None else (f" (`{c.train_file}`, split by test_fraction {c.test_fraction})"
                                      if c.test_fraction else f" (`{c.train_file}`, `{c.test_file}`)")
        extra = f", {entry['n_pseudo']} pseudo-labelled" if "n_pseudo" in entry else ""
        lines.append(f"- task `{name}`: {n_train} labelled training rows{extra}, "
                     f"{entry.get('n_test', '?')} test rows{files}")
    lines.append("")
    return lines


def _results(tasks: dict, metrics) -> list[str]:
    lines = []
    lines.append("## Results")
    lines.append("")
    if tasks:
        probe = any("probe_macro_f1" in t for t in tasks.values())
        header = "| task | labels | Macro F1 | accuracy | test rows |" + (" probing Macro F1 |" if probe else "")
        lines.append(header)
        lines.append("|" + " --- |" * (header.count("|") - 1))
        for name, t in tasks.items():
            labels = ", ".join(t.get("labels") or []) or "?"
            row = (f"| {name} | {labels} | {_fmt(t.get('macro_f1', '?'))} | {_fmt(t.get('accuracy', '?'))} "
                   f"| {t.get('n_test', '?')} |")
            if probe:
                row += f" {_fmt(t.get('probe_macro_f1', '-'))} |"
            lines.append(row)
        if "macro_f1_mean" in (metrics or {}):
            lines.append("")
            lines.append(f"Mean Macro F1 over the tasks: {_fmt(metrics['macro_f1_mean'])}.")
        lines.append("")
        lines.append("Predictions come from scoring every label option as the answer and taking the most "
                     "likely; free generation was not used.")
    else:
        lines.append("No `metrics.json` was found: the evaluation did not run (no test file) or did not finish.")
    lines.append("")
    return lines


def _environment(tasks: dict) -> list[str]:
    """Where the evaluation ran (precision, CPU kind, threads, versions): results depend on it."""
    envs = [t["environment"] for t in tasks.values() if isinstance(t.get("environment"), dict)]
    if not envs:
        return []
    env = envs[0]
    rows = [(k, env.get(k)) for k in ("device", "gpu", "cpu", "cpu_capability", "dtype", "precision_reason", "threads",
                                       "torch", "transformers") if env.get(k) is not None]
    return ["## Compute environment", "", "| | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows] + [""]


def _licence(cfg) -> list[str]:
    base = _get(cfg, 'base_model')
    licence = base_model_licence(base)
    lines = []
    lines.append("## Licence")
    lines.append("")
    if licence:
        lines.append(f"The base model `{base}` is under {licence}; these weights are derived from it and "
                     "from the training data, whose terms also apply.")
    else:
        lines.append(f"The licence of the base model `{base}` is unknown to the plugin. These weights are "
                     "derived from it and from the training data: check both licences before sharing them.")
    lines.append("")
    return lines


def _recipe(cfg) -> list[str]:
    lines = []
    lines.append("## Recipe")
    lines.append("")
    lines.append("The Axolotl recipe of the run (values that look like credentials are replaced by "
                 f"`{REDACTED}`). Run it again with `axolotl preprocess` and `axolotl train`.")
    lines.append("")
    try:
        lines.append("```yaml\n" + recipe_yaml(cfg).rstrip() + "\n```")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"(the recipe could not be written: {type(exc).__name__})")
    lines.append("")
    return lines


def _citation() -> list[str]:
    lines = []
    lines.append("## Citation")
    lines.append("")
    lines.append("```bibtex\n" + BIBTEX + "\n```")
    lines.append("")
    lines.append("Built with [Axolotl](https://github.com/axolotl-ai-cloud/axolotl), "
                 "[TRL](https://github.com/huggingface/trl) and [PEFT](https://github.com/huggingface/peft).")
    return lines


def write_model_card(cfg, config=None) -> Path | None:
    """Write ``<output_dir>/README.md``; never raises (a failure is logged)."""
    try:
        out = Path(str(_get(cfg, "output_dir")))
        if config is None:
            from axolotl_decselfmask.args import plugin_config

            config = plugin_config(cfg)
        manifest = run_manifest(out) if (config is None or config.stage1) else None
        text = render_card(cfg, config, read_metrics(out), manifest)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{CARD}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / CARD)
        LOG.info("decselfmask: model card written to %s", out / CARD)
        return out / CARD
    except Exception as exc:  # noqa: BLE001 - a card must never fail a finished run
        LOG.warning("decselfmask: the model card was not written (%s: %s)", type(exc).__name__, exc)
        return None
