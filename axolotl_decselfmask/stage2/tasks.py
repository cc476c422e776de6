"""The task of stage 2, as the other rooms of :mod:`axolotl_decselfmask.stage2` pass it around.

A :class:`Task` is one task of the recipe, read (:mod:`.data`), its prompt resolved
(:mod:`.task_prompt`) and its texts cut to fit it (:func:`.run.prepare_tasks`), or one yes/no
question of a multi-label task (:mod:`.multilabel`), whose ``parent`` is that task.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from axolotl_decselfmask.args import ClassificationConfig
from axolotl_decselfmask.io.labelled import LabelledData


@dataclass
class TaskData:
    """A task's labelled files, read and checked. ``labels``: the options the classifier chooses
    from. A multi-label task's ``label_set`` lists its labels; its ``train`` and ``test`` labels are
    then label sets (lists), and ``labels`` the answers of every label question (yes, no)."""

    train: LabelledData
    test: LabelledData | None
    labels: list[str]
    label_set: list[str] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_set is not None


@dataclass(frozen=True)
class TaskPrompt:
    """The strings a task's classification prompt is built from, as resolved for its format."""

    question: str
    system_prompt: str
    style: str = "options"
    mask_text: str | None = None


@dataclass
class Task:
    """One task, read, checked and truncated, ready for training and evaluation."""

    settings: ClassificationConfig
    data: TaskData
    prompt: TaskPrompt
    max_length: int
    train_texts: list[str]
    train_labels: list
    test_texts: list[str] | None
    gold: list | None  # the test texts' labels
    pool_texts: list[str] | None = None  # pseudo-labels' pool
    calibration_pool: list[str] | None = None  # unlabelled notes of the pool calibration modes
    run_info: dict = field(default_factory=dict)  # what metrics.json records of the run besides the scores
    parent: Task | None = None  # a yes/no question of a multi-label task: that task
    label: str | None = None  # ... and the label it asks about

    @property
    def name(self) -> str:
        return self.settings.task

    @property
    def group(self) -> str:
        """The name of the task the user named: a label question's multi-label task, else its own."""
        return self.parent.name if self.parent is not None else self.name


def task_groups(tasks: list[Task]) -> list[tuple[str, list[Task]]]:
    """``(name, tasks)`` of the stage-2 runs of ``joint: false``: each task alone, the label
    questions of a multi-label task together under its name, in order."""
    groups: dict[str, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.group, []).append(t)
    return list(groups.items())
