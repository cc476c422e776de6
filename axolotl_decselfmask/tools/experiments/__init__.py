"""The comparison of the paper on public data: methods x tasks x seeds, through Axolotl.

::

    axolotl decselfmask experiments run GRID.yml --out DIR
    axolotl decselfmask experiments report GRID.yml --out DIR

A grid names corpora (a table with a text column and label columns), tasks over each corpus
(multi-class, or one-vs-rest with ``positive``), the methods, the seeds and the sizes. The
runner writes the data of every task and seed (a fixed stratified test split per task, held
constant across methods and seeds; a labelled sample per seed; an unlabelled pool that never
holds a test row), one Axolotl recipe per run, runs ``axolotl train`` on each, and collects
every run's ``metrics.json`` into ``results.csv``, ``results.md`` and plots. A run that has
finished is not run again (delete its folder to redo it).

One module per job:

- :mod:`.methods`: the methods, defined once (:data:`METHODS`: name -> the recipe keys that make
  it); the runner sets them and the tests check ``recipes/baselines/`` against them.
- :mod:`.grid`: the grid file's schema and :func:`load_grid`.
- :mod:`.data`: corpora, stratified test splits, labelled samples, pools (:func:`build_data`).
- :mod:`.recipes`: the Axolotl recipe of one run (:func:`run_recipe`).
- :mod:`.runner`: the plan, ``axolotl train`` per run, ``done.json`` resume (:func:`run_grid`).
- :mod:`.results`: rows of ``results.csv`` and statistics over seeds (:func:`summarise`).
- :mod:`.precision`: ``report --precision``, one grid's methods against another's in another precision.
- :mod:`.ladder`: ``report --ladder``, per rung DecSelfMask minus each baseline under both scorers.
- :mod:`.predictions`: the per-note predictions copied from the runs (one gzip'd JSONL per corpus,
  method and seed, meant to be committed) and the rows of ``results.csv`` recomputed from them.
- :mod:`.bootstrap`: the paired bootstrap intervals (decselfmask minus each method).
- :mod:`.report`, :mod:`.plots`: ``results.md`` and the figures; :mod:`.cli`: the command line.
"""

from axolotl_decselfmask.tools.experiments.cli import main
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import (
    CorpusSpec,
    Grid,
    TaskSpec,
    load_grid,
)
from axolotl_decselfmask.tools.experiments.ladder import write_ladder
from axolotl_decselfmask.tools.experiments.methods import (
    BASELINE,
    METHOD_NAMES,
    METHODS,
    STAGE1_METHODS,
    Method,
    apply_method,
    definition_problems,
    get_key,
)
from axolotl_decselfmask.tools.experiments.plots import plot
from axolotl_decselfmask.tools.experiments.precision import write_precision
from axolotl_decselfmask.tools.experiments.predictions import (
    export_run,
    load_predictions,
    rows_from_predictions,
)
from axolotl_decselfmask.tools.experiments.recipes import BASE_RECIPE, run_recipe
from axolotl_decselfmask.tools.experiments.report import report_markdown, write_results
from axolotl_decselfmask.tools.experiments.results import COLUMNS, collect, summarise
from axolotl_decselfmask.tools.experiments.runner import execute, plan, run_grid

__all__ = [
    "BASELINE", "BASE_RECIPE", "COLUMNS", "METHODS", "METHOD_NAMES", "STAGE1_METHODS", "CorpusSpec", "Grid",
    "Method", "TaskSpec", "apply_method", "build_data", "collect", "definition_problems", "execute", "get_key",
    "export_run", "load_grid", "load_predictions", "main", "plan", "plot", "report_markdown", "rows_from_predictions",
    "run_grid", "run_recipe", "summarise",
    "write_ladder", "write_precision", "write_results",
]
