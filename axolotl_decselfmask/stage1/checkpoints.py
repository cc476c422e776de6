"""What stage 1 leaves in ``output_dir``, and whether stage 2 may trust it.

- a completion marker (``decselfmask_stage1_complete.json``) with the size and sha256 of the
  saved weights, written only after Axolotl has saved them; stage 2 refuses weights without
  a matching marker (a killed or interrupted stage 1, a stale or damaged adapter);
- checks of Axolotl's ``checkpoint-N`` folders, so that a resume never starts from one a kill
  left half-written.

See docs/resuming.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from axolotl_decselfmask.compat import load_trainer_checkpoint
from axolotl_decselfmask.io.distributed import barrier, is_main_process
from axolotl_decselfmask.io.files import atomic_write_json, file_sha256, fingerprint, read_json

LOG = logging.getLogger(__name__)


STAGE1_MARKER = "decselfmask_stage1_complete.json"


class Stage1IncompleteError(RuntimeError):
    """The stage-1 weights in ``output_dir`` are missing, unfinished or changed since stage 1 ended."""


def stage1_weight_files(out: Path, adapter: bool) -> list[Path]:
    """The weight files stage 1 saved in ``out``: the adapter, or the full model (with its shards).

    Raises :class:`Stage1IncompleteError` when a file is missing or its safetensors header
    does not read (a half-written or truncated file).
    """
    import json

    from safetensors import safe_open

    prefix = "adapter_model" if adapter else "model"
    index = out / f"{prefix}.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise Stage1IncompleteError(f"{index} does not read ({exc})") from exc
        files = [out / n for n in names]
    else:
        files = [out / f"{prefix}.safetensors"]
    for f in files:
        if not f.is_file():
            raise Stage1IncompleteError(f"{f} is missing")
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise Stage1IncompleteError(f"{f} is not a readable safetensors file ({exc})") from exc
    return files + ([index] if index.is_file() else [])


def write_stage1_marker(out: str | os.PathLike, adapter: bool, extra: dict | None = None) -> dict:
    """Check the saved stage-1 weights and record them in ``<out>/decselfmask_stage1_complete.json``.

    Called once stage 1 has finished and Axolotl has saved the weights; stage 2 starts only
    from weights that match this record.
    """
    from datetime import datetime, timezone


    out = Path(out)
    files = stage1_weight_files(out, adapter)
    marker = {
        "kind": "lora" if adapter else "full",
        "files": [{"name": f.name, "size": f.stat().st_size, "sha256": file_sha256(f)} for f in files],
        "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    atomic_write_json(out / STAGE1_MARKER, marker)
    return marker


def stage1_weights_key(out: str | os.PathLike) -> str | None:
    """The fingerprint of the stage-1 weights that the completion record of ``out`` names (each
    file's name, size and sha256; not the time it was written), or None without a record.

    What is made from stage 1 and kept across runs (stage 2's checkpoints) is keyed by it, so that
    it is never reused on other stage-1 weights (docs/resuming.md).
    """
    marker = read_json(Path(out) / STAGE1_MARKER)
    if not isinstance(marker, dict) or not marker.get("files"):
        return None
    return fingerprint(marker.get("kind"), [[f["name"], f["size"], f["sha256"]] for f in marker["files"]])


def _resume_hint(cfg, out: Path) -> str:
    recipe = cfg.get("axolotl_config_path") if hasattr(cfg, "get") else None
    recipe = recipe if recipe and Path(str(recipe)).is_file() else "recipe.yml"
    checkpoints = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                         key=lambda p: int(p.name.split("-")[-1]))
    found = (f"Axolotl checkpoints there: {', '.join(p.name for p in checkpoints)}. " if checkpoints
             else "There are no Axolotl checkpoints there (they need `save_strategy: steps` and `save_steps`). ")
    last = checkpoints[-1] if checkpoints else out / "checkpoint-N"
    return (found + f"To resume stage 1, set `resume_from_checkpoint: {last}` (or `auto_resume_from_checkpoints: "
            f"true`) in the recipe and run `axolotl train {recipe}` again; without a checkpoint the same "
            "command trains stage 1 from the start.")


def verify_stage1_output(cfg) -> dict:
    """The stage-1 completion record of ``cfg.output_dir``, after checking the weights still match it."""
    out = Path(cfg.output_dir)
    marker_path = out / STAGE1_MARKER

    def fail(reason: str):
        raise Stage1IncompleteError(
            f"Stage 1 did not finish in {out}: {reason}. Stage 2 does not start from incomplete or "
            f"changed stage-1 weights. {_resume_hint(cfg, out)}"
        )

    if not marker_path.is_file():
        fail(f"there is no {STAGE1_MARKER} (stage 1 was interrupted, is still running, or was never run "
             "with this plugin)")
    marker = read_json(marker_path)
    if not isinstance(marker, dict) or marker.get("kind") not in ("lora", "full") or not marker.get("files"):
        fail(f"{marker_path} does not read")
    for entry in marker["files"]:
        f = out / entry["name"]
        if not f.is_file():
            fail(f"{f} is missing")
        if f.stat().st_size != entry["size"]:
            fail(f"{f} has {f.stat().st_size} bytes, stage 1 saved {entry['size']}")
        if file_sha256(f) != entry["sha256"]:
            fail(f"{f} has changed since stage 1 saved it (sha256 differs)")
    return marker


def checkpoints(out: Path) -> list[Path]:
    """Axolotl's ``checkpoint-N`` folders, oldest first (as its auto-resume sorts them)."""
    found = [p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint folder is not complete, or None.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint killed while it was being
    written has none; its weight files must also read.
    """
    from safetensors import safe_open

    state = read_json(ckpt / "trainer_state.json")
    if not isinstance(state, dict) or "global_step" not in state:
        return "no readable trainer_state.json"
    for f in sorted(ckpt.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            return f"{f.name} does not read ({exc})"
    return None


def skip_if_finished(trainer, ckpt: Path, what: str = "stage 1") -> None:
    """Make ``trainer.train`` load ``ckpt`` and take no step when ``ckpt`` is at ``max_steps`` already.

    transformers' Trainer, resumed from a checkpoint at ``global_step == max_steps``, runs one
    more optimizer step (it checks for the end only after a step) and saves ``checkpoint-<max+1>``;
    every re-run would move the weights further (stage 1's, or with ``what="stage 2"`` the
    stage-2 classifier's).
    """
    state = read_json(ckpt / "trainer_state.json")
    max_steps = trainer.args.max_steps
    if not isinstance(state, dict) or not max_steps or max_steps <= 0 or state.get("global_step", 0) < max_steps:
        return
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return  # their checkpoints load after accelerator.prepare; leave those runs to the Trainer
    from transformers.trainer_utils import TrainOutput

    step = state["global_step"]

    def train(*args, **kwargs):
        LOG.info("decselfmask: %s already reached max_steps (%d) in %s: loading it, no further training",
                 what, max_steps, ckpt)
        load_trainer_checkpoint(trainer, str(ckpt))
        trainer.state.global_step = step
        return TrainOutput(global_step=step, training_loss=0.0, metrics={})

    trainer.train = train


def check_checkpoint(ckpt: Path) -> None:
    if ckpt.is_dir() and (problem := _checkpoint_problem(ckpt)):
        earlier = [p.name for p in checkpoints(ckpt.parent) if p != ckpt and not _checkpoint_problem(p)]
        raise Stage1IncompleteError(
            f"resume_from_checkpoint: {ckpt} is incomplete ({problem}); it was probably being written when "
            f"the run was killed. Complete checkpoints in {ckpt.parent}: {', '.join(earlier) or 'none'}."
        )


def set_aside_torn_checkpoints(out: Path) -> None:
    """Rename incomplete ``checkpoint-N`` folders to ``incomplete-checkpoint-N`` (kept, not deleted)."""
    for ckpt in checkpoints(out):
        problem = _checkpoint_problem(ckpt)
        if problem is None:
            continue
        target = out / f"incomplete-{ckpt.name}"
        n = 1
        while target.exists():
            target = out / f"incomplete-{ckpt.name}.{n}"
            n += 1
        os.replace(ckpt, target)
        LOG.warning("decselfmask: %s is incomplete (%s): moved to %s so that auto-resume uses the newest "
                    "complete checkpoint", ckpt, problem, target)




def before_stage1_trains(cfg, trainer) -> None:
    """Before stage 1 trains or resumes (the plugin's ``post_trainer_create``, ``axolotl train`` only).

    The stage-1 completion record of an earlier run no longer describes ``output_dir``, whose
    weights this run rewrites: remove it (it is written again when this run's stage 1 ends).
    With ``auto_resume_from_checkpoints``, set aside checkpoints that a kill left half-written,
    so that Axolotl resumes from the newest complete one. Resuming from a checkpoint that
    already reached ``max_steps`` (stage 1 finished, stage 2 did not) loads it without
    training: the Trainer would otherwise take one step past ``max_steps``.
    """
    out = Path(cfg.output_dir)
    if is_main_process():
        (out / STAGE1_MARKER).unlink(missing_ok=True)
        if cfg.get("resume_from_checkpoint"):
            check_checkpoint(Path(cfg.resume_from_checkpoint))
        elif cfg.get("auto_resume_from_checkpoints"):
            set_aside_torn_checkpoints(out)
    barrier()
    resume = cfg.get("resume_from_checkpoint") or (
        cfg.get("auto_resume_from_checkpoints") and next(reversed(checkpoints(out)), None))
    if resume:
        skip_if_finished(trainer, Path(resume))


def mark_stage1_complete(cfg) -> None:
    """Stage 1's completion record, once Axolotl has saved its weights (:func:`write_stage1_marker`)."""
    marker = write_stage1_marker(cfg.output_dir, adapter=bool(cfg.adapter),
                                 extra={"resumed_from": cfg.get("resume_from_checkpoint")})
    LOG.info("decselfmask: stage 1 complete, %s written (%s)", Path(cfg.output_dir) / STAGE1_MARKER,
             ", ".join(f["name"] for f in marker["files"]))
