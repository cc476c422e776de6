"""results.md names what each method's runs computed in, from the dtype its predictions files
record (tools/experiments/report.py, precision_lines), and stays as it was where no file records one."""

from helpers import prediction_records

from axolotl_decselfmask.tools.experiments.predictions import rows_from_predictions
from axolotl_decselfmask.tools.experiments.report import write_results


def _report(tmp_path, records) -> str:
    write_results(tmp_path, rows_from_predictions(records), records=records, resamples=200)
    return (tmp_path / "results.md").read_text()


def test_recorded_dtypes_are_counted_per_method_and_unrecorded_files_are_named(tmp_path):
    records = prediction_records({"sft": 0.3, "decselfmask": 0.3, "setfit": 0.2})
    for r in records:
        if r["method"] == "decselfmask":
            r.update(dtype="float32", cpu_capability="AVX2")
        if r["method"] == "sft" and r["seed"] == 0:
            r.update(dtype="bfloat16", cpu_capability="AVX512")
    text = _report(tmp_path, records)
    assert "- decselfmask: float32 (AVX2 kernels) x3" in text
    assert "- sft: bfloat16 (AVX512 kernels) x1, not recorded x2" in text
    assert "- setfit: not recorded x3" in text


def test_no_recorded_dtype_leaves_the_report_without_the_section(tmp_path):
    records = prediction_records({"sft": 0.3, "decselfmask": 0.3})
    assert "Precision of each method" not in _report(tmp_path, records)
    records[0]["dtype"] = "float32"  # the same records, one file recording its dtype
    assert records[0]["method"] == "sft"
    assert "- sft: float32 (kernels not recorded) x1, not recorded x2" in _report(tmp_path, records)
