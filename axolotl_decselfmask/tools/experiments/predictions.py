"""The committed per-note predictions of a grid: one gzip'd JSONL per (corpus, method, seed), copied
from the finished runs, from which ``report`` recomputes ``results.csv`` without the runs.

``<predictions_dir>/<corpus>/<method>-seed<k>.jsonl.gz`` (``zero_shot``: one file, ``seed0``, whose
``seeds`` are every seed it stands for). Its first line is the run::

    {"format": 1, "corpus": ..., "method": ..., "seed": k, "seeds": [k], "run": "<run folder>",
     "seconds": <the run's seconds>, "stage1_tokens": <int or null>, "run_key": <the run's key>,
     "dtype": "float32" | "bfloat16", "cpu_capability": "AVX2" | ...}

then one line per task (a multi-label task: one per label, ``<task>/<label>``, yes/no)::

    {"task": ..., "labels": [...], "row": [...], "gold": [...], "pred": [...], "n_train": ...,
     "n_pseudo": ..., "probe_macro_f1": ..., "multi_label_task": ""}

A run with probing (``decselfmask.probing``) adds ``"heads": {"package": [...], "authors": [...]}``
to a single-label task's line: each head's argmax prediction of every note (indices into ``labels``,
in the order of ``row``), on the frozen model before stage 2 (files without it are read as before).

A run with ``classification.scorer: string_match`` or ``both`` adds ``sm_gold``, ``sm_pred`` (each
note's answer as the authors' scorer reads it: joined token ids) and ``sm_off`` (1: off format) to
each line (:func:`string_match_records`; files without them are read as before).

``row``: the note's row in the corpus (the test file's ``row``; the test file's own row number
where it has none), the same for every task that shares the note; ``gold`` and ``pred``: indices
into ``labels``. Scores are not kept (22 tasks x 200 binary notes: about 3 KB a file). Files are written
atomically and byte-identically for the same content (gzip without a time stamp), and only
rewritten when their content changes. ``run_key`` (the fingerprint of the run's recipe and data,
:func:`.results.run_key`, as in its ``done.json``) lets a later ``experiments run`` on a fresh
checkout count the run as finished (:func:`committed_records`) instead of running it again.
``dtype`` and ``cpu_capability`` (from the run's ``metrics.json`` environment; absent in files
written before they were recorded, and for ``setfit`` / ``logreg_minilm``) say what it ran in.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

from axolotl_decselfmask.io.files import read_jsonl
from axolotl_decselfmask.stage2 import outputs as run_outputs

FORMAT = 1
SUFFIX = ".jsonl.gz"


def predictions_path(folder: str | Path, corpus: str, method: str, seed: int) -> Path:
    return Path(folder) / corpus / f"{method}-seed{seed}{SUFFIX}"


def _write_gz_lines(path: Path, lines: list[dict]) -> bool:
    """Write ``lines`` gzip'd (no time stamp) through a temporary file and a rename; False (nothing
    written) when the file already holds exactly these bytes."""
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
    data = gzip.compress(text, compresslevel=9, mtime=0)
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file (mkstemp makes it private)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def _corpus_rows(test_file: str | None) -> list | None:
    """The corpus row of each line of a test file (its ``row`` key), or None when unknown."""
    if not test_file or not Path(test_file).is_file():
        return None
    rows = read_jsonl(test_file)
    return [r.get("row") for r in rows] if rows and all("row" in r for r in rows) else None


def _extras(entry: dict) -> dict:
    return {"n_train": entry.get("n_train", ""), "n_pseudo": entry.get("n_pseudo", ""),
            "probe_macro_f1": entry.get("probe_macro_f1", "")}


def _task_lines(task: str, entry: dict, preds: list[dict], corpus_rows: list | None, where: Path) -> list[dict]:
    """The lines of one metrics.json task: one, or one per label of a multi-label task."""
    def note(r: int):
        return corpus_rows[r] if corpus_rows is not None and 0 <= r < len(corpus_rows) else r

    rows = [note(p["row"]) for p in preds]
    if not entry.get("multi_label"):
        labels = list(entry.get("labels") or sorted({p["gold"] for p in preds} | {p["pred"] for p in preds}))
        index = {y: i for i, y in enumerate(labels)}
        unknown = ({p["gold"] for p in preds} | {p["pred"] for p in preds}) - set(index)
        if unknown:
            raise ValueError(f"{where}: labels {sorted(unknown)} are not among the task's labels {labels}")
        line = {"task": task, "labels": labels, "row": rows, "gold": [index[p["gold"]] for p in preds],
                "pred": [index[p["pred"]] for p in preds], **_extras(entry), "multi_label_task": "",
                **_string_match_fields(preds)}
        heads = _head_predictions(entry, index, len(preds), where)
        return [{**line, "heads": heads} if heads else line]
    answers = list(entry.get("label_answers") or ["yes", "no"])
    lines = []
    for label, own in (entry.get("per_label") or {}).items():
        lines.append({"task": f"{task}/{label}", "labels": answers, "row": rows,
                      "gold": [0 if label in p["gold"] else 1 for p in preds],
                      "pred": [0 if label in p["pred"] else 1 for p in preds],
                      "n_train": entry.get("n_train", ""), "n_pseudo": own.get("n_pseudo", entry.get("n_pseudo", "")),
                      "probe_macro_f1": own.get("probe_macro_f1", ""), "multi_label_task": task,
                      **_string_match_fields(preds, label)})
    return lines


def _head_predictions(entry: dict, index: dict, n: int, where: Path) -> dict:
    """Each probing head's predictions of the task's notes (``probe_heads`` of its metrics.json
    entry) as label indices; {} when the run recorded none."""
    heads = {}
    for style, result in (entry.get("probe_heads") or {}).items():
        pred = result.get("predictions") if isinstance(result, dict) else None
        if pred is None:
            continue
        if len(pred) != n or any(p not in index for p in pred):
            raise ValueError(f"{where}: probing head {style!r} has {len(pred)} predictions for {n} notes, or labels "
                             "outside the task's")
        heads[style] = [index[p] for p in pred]
    return heads


def head_records(records: list[dict]) -> list[dict]:
    """The probing heads' predictions as records of their own: method ``<method>:<style>_head``, each
    task line's ``pred`` that head's; records and lines without heads are left out."""
    out = {}
    for rec in records:
        for line in rec["tasks"]:
            for style, pred in (line.get("heads") or {}).items():
                key = (id(rec), style)
                if key not in out:
                    out[key] = {**rec, "method": f"{rec['method']}:{style}_head", "tasks": []}
                out[key]["tasks"].append({**line, "pred": pred})
    return list(out.values())


def _string_match_fields(preds: list[dict], label: str | None = None) -> dict:
    """The authors' string-match answers of each note (``classification.scorer: string_match``):
    ``sm_gold`` and ``sm_pred`` (the answers' joined token ids) and ``sm_off`` (1: off format), in
    the order of ``row``; a multi-label task's of ``label``. {} when the run did not score so."""
    notes = [p.get("string_match") for p in preds]
    if label is not None:
        notes = [(n or {}).get("per_label", {}).get(label) for n in notes]
    if not notes or not all(isinstance(n, dict) and "gold" in n for n in notes):
        return {}
    return {"sm_gold": [n["gold"] for n in notes], "sm_pred": [n["pred"] for n in notes],
            "sm_off": [int(bool(n["off_format"])) for n in notes]}


def string_match_records(records: list[dict]) -> list[dict]:
    """The string-match answers as records of their own (same method names): each task line with
    ``sm_gold`` becomes one whose ``labels`` are its gold and predicted answers and whose classes
    are those present (``"classes": "present"``, :mod:`.bootstrap`); records without any are left out."""
    out = []
    for rec in records:
        lines = []
        for line in rec["tasks"]:
            if "sm_gold" in line:
                labels = sorted(set(line["sm_gold"]) | set(line["sm_pred"]))
                index = {y: i for i, y in enumerate(labels)}
                lines.append({**{k: v for k, v in line.items() if k not in ("heads",)}, "labels": labels,
                              "gold": [index[y] for y in line["sm_gold"]],
                              "pred": [index[y] for y in line["sm_pred"]], "classes": "present"})
        if lines:
            out.append({**rec, "tasks": lines})
    return out


def _precision(record: dict) -> dict:
    """``dtype`` and ``cpu_capability`` of a run, from its tasks' environment (empty where none says)."""
    for entry in ((record.get("metrics") or {}).get("tasks") or {}).values():
        env = entry.get("environment") if isinstance(entry, dict) else None
        if isinstance(env, dict) and env.get("dtype"):
            return {"dtype": env["dtype"], "cpu_capability": env.get("cpu_capability")}
    return {}


def export_run(run: dict, record: dict, folder: str | Path, all_seeds: list[int]) -> list[Path]:
    """Copy the predictions of one finished run (``record``: its done.json) into ``folder``: one file
    per seed of the run. Returns the files written (those whose content changed)."""
    out = Path(run["dir"]) / "output"
    recipe = run.get("recipe") or {}
    tasks = (recipe.get("decselfmask") or recipe).get("tasks") or []  # an Axolotl recipe, or setfit's run spec
    test_files = {t["task"]: t.get("test_file") for t in tasks if isinstance(t, dict) and "task" in t}
    by_seed: dict[int, list[dict]] = {}
    for task_seed, entry in sorted((record.get("metrics") or {}).get("tasks", {}).items()):
        task, _, seed = task_seed.rpartition("@seed")
        path, preds = run_outputs.predictions_path(out, task_seed), run_outputs.read_predictions(out, task_seed)
        if preds is None:
            raise ValueError(f"{path}: no predictions file for task {task_seed} of the finished run {run['dir']}; "
                             "run it again (delete its done.json) to write them")
        by_seed.setdefault(int(seed), []).extend(
            _task_lines(task, entry, preds, _corpus_rows(test_files.get(task_seed)), path))
    written = []
    for seed, lines in sorted(by_seed.items()):
        seeds = list(all_seeds) if run["method"] == "zero_shot" else [seed]
        head = {"format": FORMAT, "corpus": run["corpus"], "method": run["method"], "seed": seed, "seeds": seeds,
                "run": Path(run["dir"]).name, "seconds": record.get("seconds"),
                "stage1_tokens": record.get("stage1_tokens"), "run_key": record.get("run_key"),
                **_precision(record)}
        path = predictions_path(folder, run["corpus"], run["method"], seed)
        if _write_gz_lines(path, [head, *lines]):
            written.append(path)
    return written


def export_finished(runs: list[dict], folder: str | Path, all_seeds: list[int]) -> list[Path]:
    """:func:`export_run` for each finished run of ``runs`` (a run without its predictions files is
    reported and skipped: its rows still come from metrics.json). Returns the files written."""
    from axolotl_decselfmask.tools.experiments.results import done_record

    written = []
    for run in runs:
        record = done_record(run)
        if record:
            try:
                written += export_run(run, record, folder, all_seeds)
            except ValueError as err:
                print(f"predictions: {err}")
    return written


def committed_records(run: dict, folder: str | Path) -> list[dict] | None:
    """The predictions files of ``run`` (one per seed of the run; zero-shot's run has one) in ``folder``
    when every one was written by a run of the same recipe and data (its ``run_key``), else None: the
    run then needs no rerun, and its rows come from the files."""
    from axolotl_decselfmask.tools.experiments.results import run_key

    key = run_key(run)
    records = []
    for seed in run["seeds"]:
        path = predictions_path(folder, run["corpus"], run["method"], seed)
        try:
            record = read_predictions(path) if path.is_file() else None
        except (ValueError, OSError, json.JSONDecodeError):
            record = None
        if not record or record.get("run_key") != key:
            return None
        records.append(record)
    return records


def read_predictions(path: str | Path) -> dict:
    """One predictions file: its first line with ``tasks`` (the task lines) added."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or lines[0].get("format") != FORMAT:
        raise ValueError(f"{path}: not a predictions file of format {FORMAT} (axolotl "
                         "decselfmask experiments report writes them from finished runs)")
    return {**lines[0], "tasks": lines[1:]}


def load_predictions(folder: str | Path, corpora=None, methods=None, seeds=None) -> list[dict]:
    """Every predictions file under ``folder`` (of ``corpora``, ``methods`` and ``seeds`` only, if
    given), sorted by path; a zero_shot record keeps only the ``seeds`` it stands for."""
    folder = Path(folder)
    records = [read_predictions(p) for p in sorted(folder.glob(f"*/*{SUFFIX}"))] if folder.is_dir() else []
    records = [r for r in records if (corpora is None or r["corpus"] in corpora)
               and (methods is None or r["method"] in methods)]
    if seeds is not None:
        records = [{**r, "seeds": [s for s in r["seeds"] if s in seeds]} for r in records]
        records = [r for r in records if r["seeds"]]
    return records


def _macro_f1_accuracy(line: dict) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    gold, pred = line["gold"], line["pred"]
    if not gold:
        return 0.0, 0.0
    f1 = f1_score(gold, pred, labels=list(range(len(line["labels"]))), average="macro", zero_division=0)
    return float(f1), float(sum(g == p for g, p in zip(gold, pred)) / len(gold))


def rows_from_predictions(records: list[dict]) -> list[dict]:
    """The rows of ``results.csv`` (:data:`.results.COLUMNS`) from predictions files: Macro F1
    (scikit-learn, ``average="macro"`` over the task's labels) and accuracy recomputed per note."""
    rows = []
    for rec in records:
        for line in sorted(rec["tasks"], key=lambda t: t["task"]):
            f1, acc = _macro_f1_accuracy(line)
            probe = line.get("probe_macro_f1", "")
            values = {"task": line["task"], "macro_f1": round(f1, 4), "accuracy": round(acc, 4),
                      "probe_macro_f1": round(probe, 4) if probe != "" else "", "n_train": line.get("n_train", ""),
                      "n_pseudo": line.get("n_pseudo", ""), "n_test": len(line["gold"]),
                      "n_labels": len(line["labels"]), "multi_label_task": line.get("multi_label_task", ""),
                      "stage1_tokens": rec.get("stage1_tokens") or "", "run_seconds": rec.get("seconds")}
            rows += [{"corpus": rec["corpus"], "method": rec["method"], "seed": str(s), **values}
                     for s in rec["seeds"]]
    return rows
