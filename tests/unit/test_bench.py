"""The benchmark runs end to end on a tiny random model (no timing is asserted)."""

import json
import math

import pytest
import torch

from axolotl_decselfmask.tools import bench

NOTES = [
    "A 64-year-old woman with breast carcinoma received adjuvant chemotherapy. Her tumour was small.",
    "Patients with chronic pancreatitis had lower bone density. Vitamin D was measured in all of them.",
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return bench.load_model(tiny_llama, "float32")


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_relevance_rows_have_the_keys_and_positive_numbers(tiny, tmp_path):
    model, tok = tiny
    rows = bench.run_relevance(model, tok, NOTES, ["grad_x_input", "integrated_gradients"], ig_steps=4,
                               progress=False, warmup=False)
    assert [r["method"] for r in rows] == ["grad_x_input", "integrated_gradients"]
    for row in rows:
        assert set(bench.ROW_KEYS) <= set(row)
        assert row["status"] == "ok"
        for key in ("notes_per_s", "forward_equivalents", "peak_rss_mib"):
            assert _positive(row[key]), (key, row)
        assert 0 <= row["overlap_with_ig"] <= 1 and 0 <= row["span_overlap_with_ig"] <= 1
        assert row["notes"] == len(NOTES)
    assert rows[1]["overlap_with_ig"] == 1.0  # integrated gradients against itself
    assert bench.format_relevance_table(rows).splitlines()[0].startswith("method")
    assert bench.relevance_goals(rows, ig_steps=4)[0].startswith("goal grad_x_input")


def test_cli_writes_json_and_reports_an_unavailable_method(tiny_llama, tmp_path, monkeypatch, capsys):
    from axolotl_decselfmask.relevance.methods import GradientXInput, MethodNotSupported

    class Unavailable(GradientXInput):
        name = "unavailable_here"

        @classmethod
        def check_model_config(cls, config):
            raise MethodNotSupported("needs a library that is not installed")

    from axolotl_decselfmask import registry

    methods = dict(registry.relevance_methods(), unavailable_here=Unavailable)
    monkeypatch.setattr(registry, "relevance_methods", lambda: methods)
    data = tmp_path / "notes.csv"
    data.write_text("text\n" + "\n".join(f'"{n}"' for n in NOTES) + "\n")
    out = tmp_path / "rows.json"
    code = bench.main(["relevance", "--model", str(tiny_llama), "--data", str(data), "--notes", "2",
                       "--max-tokens", "16", "--methods", "grad_x_input,unavailable_here", "--no-progress",
                       "--threads", str(torch.get_num_threads()), "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["grad_x_input", "unavailable_here"]
    for row in rows:
        assert set(bench.ROW_KEYS) <= set(row)
    assert _positive(rows[0]["notes_per_s"]) and _positive(rows[0]["forward_equivalents"])
    assert rows[0]["overlap_with_ig"] is None  # integrated gradients did not run
    assert rows[1]["status"].startswith("unavailable: needs a library")
    assert rows[1]["notes_per_s"] is None
    printed = capsys.readouterr().out
    assert "unavailable_here  unavailable: needs a library" in printed


def test_items_ratio_shared_and_padded_batch_agree_with_separate_scorings(tiny):
    model, tok = tiny
    rows = bench.run_items(model, tok, NOTES[:1], ["neoplasms", "digestive system diseases", "diabetes"],
                           padded_batch=True, progress=False)
    assert [r["method"] for r in rows] == ["grad_x_input", "grad_x_input:padded_batch"]
    for row in rows:
        assert _positive(row["ratio"]) and _positive(row["seconds_per_note"])
        # same maps as scoring every item on its own (float32 rounding only)
        assert row["max_rel_diff_vs_separate"] < 1e-3
    assert "ratio" in bench.format_items(rows)
    fast = bench.run_items(model, tok, NOTES[:1], ["neoplasms", "diabetes"], fast_backward=True, progress=False)
    assert [r["method"] for r in fast] == ["grad_x_input:fast_backward"] and fast[0]["fast_backward"]


def test_truncate_and_overlap_helpers(tiny):
    _, tok = tiny
    cut = bench.truncate_to_tokens(tok, NOTES[0], 5)
    assert NOTES[0].startswith(cut) and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 5
    assert bench.top_fraction([0.1, -5, 0.2, 3, 0, 0, 0, 0, 0, 0], 0.2) == {1, 3}
    assert bench.jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)
