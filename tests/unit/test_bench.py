"""The shipped benchmark and the prototypes script run end to end on a tiny random model (no timing is asserted)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from axolotl_decselfmask.tools import bench

ROOT = Path(__file__).resolve().parents[2]
NOTES = [
    "A 64-year-old woman with breast carcinoma received adjuvant chemotherapy. Her tumour was small.",
    "Patients with chronic pancreatitis had lower bone density. Vitamin D was measured in all of them.",
]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return bench.load_model(tiny_llama, "float32")


@pytest.fixture(scope="module")
def prototypes():
    spec = importlib.util.spec_from_file_location("relevance_prototypes", ROOT / "benchmarks" / "relevance_prototypes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _notes_csv(tmp_path):
    data = tmp_path / "notes.csv"
    data.write_text("text\n" + "\n".join(f'"{n}"' for n in NOTES) + "\n")
    return data


def test_relevance_rows_have_the_keys_and_positive_numbers(tiny):
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
        assert row["notes"] == len(NOTES) and len(row["seconds_by_note"]) == len(NOTES)
        assert "overlap_with_default" not in row  # only extra methods are compared with the default
    assert rows[1]["overlap_with_ig"] == 1.0  # integrated gradients against itself
    table = bench.format_relevance_table(rows).splitlines()
    assert table[0].startswith("method") and "fwd-equiv/note" in table[0] and len(table) == 3


def test_an_extra_method_is_compared_with_the_default_and_reports_its_parts(tiny):
    model, tok = tiny
    made, _ = bench.make_methods(["grad_x_input"], model, tok)
    same = made["grad_x_input"]

    class Timed:  # the same method under another name, timing a made-up part of each call
        model, batch, last_parts = same.model, same.batch, {"forward": 1e-3}

        def attribute(self, prompts):
            return same.attribute(prompts)

    rows = bench.run_relevance(model, tok, NOTES, ["grad_x_input"], extra={"copy": Timed()}, repeats=2,
                               progress=False, warmup=False)
    copy = rows[1]
    assert copy["method"] == "copy" and copy["calls"] == 4 and copy["notes"] == len(NOTES)
    assert copy["overlap_with_default"] == 1.0 and copy["max_rel_diff_vs_default"] < 1e-5
    assert _positive(copy["forward_part_fe"])
    assert "top10% J(default)" in bench.format_relevance_table(rows).splitlines()[0]


def test_cli_writes_json_and_reports_an_unavailable_method(tiny_llama, tmp_path, monkeypatch, capsys):
    from axolotl_decselfmask import registry
    from axolotl_decselfmask.relevance.methods import GradientXInput, MethodNotSupported

    class Unavailable(GradientXInput):
        name = "unavailable_here"

        @classmethod
        def check_model_config(cls, config):
            raise MethodNotSupported("needs a library that is not installed")

    methods = dict(registry.relevance_methods(), unavailable_here=Unavailable)
    monkeypatch.setattr(registry, "relevance_methods", lambda: methods)
    out = tmp_path / "rows.json"
    code = bench.main(["relevance", "--model", str(tiny_llama), "--data", str(_notes_csv(tmp_path)), "--notes", "2",
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
    assert "goal" not in printed  # the goals of the old issue live in benchmarks/relevance_prototypes.py


def test_items_ratio_shared_and_padded_batch_agree_with_separate_scorings(tiny):
    model, tok = tiny
    rows = bench.run_items(model, tok, NOTES[:1], ["neoplasms", "digestive system diseases", "diabetes"],
                           padded_batch=True, progress=False)
    assert [r["method"] for r in rows] == ["grad_x_input", "grad_x_input:padded_batch"]
    for row in rows:
        assert _positive(row["ratio"]) and _positive(row["seconds_per_note"])
        # same maps as scoring every item on its own (float32 rounding only)
        assert row["max_rel_diff_vs_separate"] < 1e-3
    assert "ratio" in bench.format_items(rows) and "goal" not in bench.format_items(rows)
    fast = bench.run_items(model, tok, NOTES[:1], ["neoplasms", "diabetes"], fast_backward=True, progress=False)
    assert [r["method"] for r in fast] == ["grad_x_input:fast_backward"] and fast[0]["fast_backward"]


def test_profile_phases_add_up(tiny):
    model, tok = tiny
    rows = bench.run_profile(model, tok, NOTES[:1], progress=False)
    totals = {r["phase"]: r for r in rows if r.get("category") == "total" and "op" not in r}
    assert totals["plain_forward"]["forward_equivalents"] == pytest.approx(1.0)
    assert _positive(totals["gxi_backward"]["forward_equivalents"])
    assert any("op" in r for r in rows) and "top operations of the backward" in bench.format_profile(rows)
    # AttnLRP (the default method) beside it on a model it supports, its rules' operations among its ops
    assert all(_positive(totals[ph]["forward_equivalents"]) for ph in ("lrp_forward", "lrp_backward"))
    lrp_ops = {r["op"] for r in rows if r.get("phase") in ("lrp_forward", "lrp_backward") and "op" in r}
    assert lrp_ops & {"_Linearised", "_LinearisedBackward", "_ScaleGrad", "_ScaleGradBackward", "aten::nan_to_num"}
    assert "top operations of lrp_backward" in bench.format_profile(rows)


def test_dtype_section_times_three_parts_in_both_precisions(tiny_llama, tmp_path, capsys):
    out = tmp_path / "dtype.json"
    code = bench.main(["dtype", "--model", str(tiny_llama), "--data", str(_notes_csv(tmp_path)), "--notes", "1",
                       "--note-tokens", "12", "--train-batch", "2", "--train-tokens", "64", "--eval-texts", "2",
                       "--eval-tokens", "12", "--no-progress", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["part"] for r in rows] == ["relevance", "stage1_step", "evaluation"]
    for r in rows:
        assert _positive(r["float32_s"]) and _positive(r["bfloat16_s"]) and _positive(r["bf16_over_fp32"])
        assert r["bf16_over_fp32"] == pytest.approx(r["bfloat16_s"] / r["float32_s"])  # one repeat: the pair
    assert "2 x " in rows[1]["what"] and "5 options" in rows[2]["what"]
    printed = capsys.readouterr().out
    assert f"get_cpu_capability(): {torch.backends.cpu.get_cpu_capability()}" in printed
    from axolotl_decselfmask.hardware import decide_precision

    precision = decide_precision()
    assert f"decide_precision()): {precision.dtype} ({precision.reason})" in printed
    assert "bf16/fp32" in printed and f"torch {torch.__version__}" in printed


def test_training_rows_supervise_the_answer_only(tiny):
    _, tok = tiny
    batch = bench.training_rows(tok, [NOTES[0] * 4], 3, 64)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 3 and 40 <= ids.shape[1] <= 80
    supervised = labels != -100
    assert supervised.any(1).all() and (supervised.sum(1) < mask.sum(1)).all()
    assert tok.decode(ids[0][mask[0].bool()]).count("<mask>") == 3


def test_default_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="no --model given.*pass --model"):
        bench.resolve_model(None)
    (tmp_path / bench.DEFAULT_MODEL).mkdir(parents=True)
    (tmp_path / bench.DEFAULT_MODEL / "config.json").write_text("{}")
    assert bench.resolve_model(None) == bench.DEFAULT_MODEL and bench.resolve_model("x/y") == "x/y"
    data = bench.resolve_data(None)  # the abstracts bundled with the package
    assert Path(data).name == "abstracts_unlabelled.jsonl" and len(bench.read_texts(data, "text")) > 100
    with pytest.raises(SystemExit, match="no such file"):
        bench.resolve_data(str(tmp_path / "missing.csv"))


def test_truncate_and_overlap_helpers(tiny):
    _, tok = tiny
    cut = bench.truncate_to_tokens(tok, NOTES[0], 5)
    assert NOTES[0].startswith(cut) and len(tok(cut, add_special_tokens=False)["input_ids"]) <= 5
    assert bench.top_fraction([0.1, -5, 0.2, 3, 0, 0, 0, 0, 0, 0], 0.2) == {1, 3}
    assert bench.jaccard({1, 2}, {2, 3}) == pytest.approx(1 / 3)


@pytest.mark.parametrize("command", [[str(Path(sys.executable).parent / "decselfmask"), "bench", "--help"],
                                     [str(Path(sys.executable).parent / "decselfmask"), "bench", "dtype", "--help"],
                                     [sys.executable, str(ROOT / "benchmarks" / "relevance_prototypes.py"), "--help"]])
def test_help(command):
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("relevance,items,profile,dtype" in done.stdout or "--repeats" in done.stdout
            or "--variants" in done.stdout)


def test_prototype_variants_match_the_method(tiny, prototypes):
    model, tok = tiny
    variants = prototypes.make_variants(["split", "trim", "forward_medium"], model, tok)
    rows = prototypes.run_relevance(model, tok, NOTES, ["grad_x_input"], extra=variants, progress=False,
                                    warmup=False)
    prototypes.drop_overlaps_of_non_relevance(rows)
    by = {r["method"]: r for r in rows}
    assert by["grad_x_input:split"]["max_rel_diff_vs_default"] < 1e-5  # the same computation, timed apart
    assert _positive(by["grad_x_input:split"]["forward_part_fe"]) and _positive(by["grad_x_input:split"]["backward_part_fe"])
    assert by["grad_x_input:trim"]["overlap_with_default"] == 1.0
    assert "overlap_with_default" not in by["grad_x_input:forward_medium"]
    assert prototypes.relevance_goals(rows, ig_steps=4)[0].startswith("goal grad_x_input")
    with pytest.raises(ValueError, match="unknown variant"):
        prototypes.make_variants(["nope"], model, tok)
