"""Benchmarks of the plugin on the machine they run on: ``axolotl decselfmask bench SECTION``.

- ``relevance``: every registered relevance method on the same notes with the same model:
  notes/s, forward-pass equivalents per note (paired with plain forwards of the same batch),
  peak RSS, and the overlap of its top tokens and spans with integrated gradients';
- ``items``: the K items of one text in one ``compute_relevance`` call against K separate
  scorings, as a cost ratio;
- ``profile``: grad x input's forward and backward by kind of operation (torch.profiler);
- ``dtype``: float32 against bfloat16 for relevance, a stage-1 training step and an
  evaluation batch, with the CPU's capability and the precision the plugin would choose.

See ``docs/benchmark.md`` for the commands, recorded runs and what they found. Prototypes
(variants of grad x input, the old shim of an external LRP library) are in ``benchmarks/relevance_prototypes.py`` of the
repository, outside the package.
"""

from axolotl_decselfmask.compat import attn_implementation
from axolotl_decselfmask.tools.bench.cli import build_parser, main
from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_ITEM,
    DEFAULT_LEAD_IN,
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    BenchInputError,
    PeakRSS,
    jaccard,
    keep_attn_implementation,
    load_model,
    load_notes,
    plain_forward,
    product_fast_backward,
    read_texts,
    resolve_data,
    resolve_model,
    span_chars,
    timed,
    top_fraction,
    truncate_to_tokens,
)
from axolotl_decselfmask.tools.bench.items import DEFAULT_ITEMS, format_items, run_items
from axolotl_decselfmask.tools.bench.precision import (
    DtypeSizes,
    format_dtype,
    machine_lines,
    run_dtype,
    training_rows,
)
from axolotl_decselfmask.tools.bench.profiling import format_profile, run_profile
from axolotl_decselfmask.tools.bench.relevance import (
    REFERENCE,
    ROW_KEYS,
    SLOW_METHODS,
    MethodStats,
    format_relevance_table,
    make_methods,
    run_relevance,
)

__all__ = [
    "DEFAULT_ITEM",
    "DEFAULT_ITEMS",
    "DEFAULT_LEAD_IN",
    "DEFAULT_METHOD",
    "DEFAULT_MODEL",
    "REFERENCE",
    "ROW_KEYS",
    "SLOW_METHODS",
    "BenchInputError",
    "DtypeSizes",
    "MethodStats",
    "PeakRSS",
    "attn_implementation",
    "build_parser",
    "format_dtype",
    "format_items",
    "format_profile",
    "format_relevance_table",
    "jaccard",
    "keep_attn_implementation",
    "load_model",
    "load_notes",
    "machine_lines",
    "main",
    "make_methods",
    "plain_forward",
    "product_fast_backward",
    "read_texts",
    "resolve_data",
    "resolve_model",
    "run_dtype",
    "run_items",
    "run_profile",
    "run_relevance",
    "span_chars",
    "timed",
    "top_fraction",
    "training_rows",
    "truncate_to_tokens",
]
