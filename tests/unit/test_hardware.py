"""The precision and thread decisions of :mod:`axolotl_decselfmask.hardware`, on described machines."""

from __future__ import annotations

import pytest

from axolotl_decselfmask import hardware
from axolotl_decselfmask.hardware import (
    CpuInfo,
    cpu_bf16_native,
    decide_precision,
    decide_threads,
    resolve_recipe_precision,
    slow_bf16_warning,
    wait_policy_warning,
)

AVX2 = CpuInfo("AVX2", frozenset({"avx2", "fma"}), "AVX2 laptop", "")
AVX512_NO_BF16 = CpuInfo("AVX512", frozenset({"avx2", "avx512f", "avx512bw"}), "Skylake server", "")
AVX512_BF16 = CpuInfo("AVX512", frozenset({"avx512f", "avx512_bf16"}), "Cooper Lake", "")
AMX = CpuInfo("AVX512", frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}), "Sapphire Rapids", "")
# A Sapphire Rapids told to behave as AVX2 (ATEN_CPU_CAPABILITY=avx2): torch reports AVX2.
AMX_AS_AVX2 = CpuInfo("AVX2", AMX.flags, "Sapphire Rapids", "")
AMX_ONEDNN_AVX2 = CpuInfo("AVX512", AMX.flags, "Sapphire Rapids", "AVX2")


def _never():
    raise AssertionError("no measurement expected here")


@pytest.mark.parametrize("info, native", [
    (AVX2, False), (AVX512_NO_BF16, False), (AMX, True), (AMX_AS_AVX2, False), (AMX_ONEDNN_AVX2, False),
    (CpuInfo("DEFAULT", frozenset(), "arm?", ""), False), (CpuInfo("NO AVX", frozenset(), "old", ""), False),
])
def test_cpu_bf16_from_capability_and_flags(info, native):
    got, reason = cpu_bf16_native(info, measure=_never)
    assert got is native
    assert reason.startswith(info.capability)
    assert ("native bf16" in reason) and (("no native" in reason) is not native)


@pytest.mark.parametrize("ratio, native", [(0.4, True), (1.3, False)])
def test_avx512_bf16_without_amx_is_measured(ratio, native):
    got, reason = cpu_bf16_native(AVX512_BF16, measure=lambda: ratio)
    assert got is native and f"{ratio:.2f}x" in reason


def test_precision_on_cuda_follows_the_gpu():
    assert decide_precision(None, cuda=True, cuda_bf16=True).dtype == "bfloat16"
    assert decide_precision("auto", cuda=True, cuda_bf16=False).dtype == "float32"
    assert decide_precision(False, cuda=True, cuda_bf16=True).dtype == "float32"


@pytest.mark.parametrize("requested, info, dtype, warns", [
    ("auto", AVX2, "float32", False), (None, AVX512_NO_BF16, "float32", False), ("auto", AMX, "bfloat16", False),
    (True, AVX2, "bfloat16", True), (True, AMX, "bfloat16", False), (False, AMX, "float32", False),
])
def test_precision_on_cpu(requested, info, dtype, warns):
    p = decide_precision(requested, cuda=False, cuda_bf16=False, cpu=info, measure=_never)
    assert p.dtype == dtype and p.device == "cpu"
    warning = slow_bf16_warning(p, cpu=info)
    assert (warning is not None) is warns
    if warns:
        assert info.model_name in warning and "23x" in warning and "bf16: auto" in warning


def test_axolotl_turns_auto_into_fp16_on_a_cpu_and_the_plugin_decides_first(monkeypatch):
    """Axolotl 0.19's resolve_dtype makes ``bf16: auto`` fp16 on a machine without a bf16 GPU;
    after resolve_recipe_precision it keeps the machine's decision and never fp16."""
    from axolotl.utils.config import resolve_dtype
    from axolotl.utils.dict import DictDefault

    import axolotl_decselfmask.hardware as hw

    if hw.decide_precision().device != "cpu":
        pytest.skip("needs a machine without CUDA")
    raw = DictDefault({"bf16": "auto", "base_model": "x"})
    resolve_dtype(raw)
    assert raw.fp16 is True and raw.bf16 is False  # Axolotl alone: float16 training on a CPU

    for info, bf16 in ((AVX2, False), (AMX, True)):
        monkeypatch.setattr(hw, "read_cpu_info", lambda info=info: info)
        cfg = DictDefault({"bf16": "auto", "base_model": "x"})
        precision = resolve_recipe_precision(cfg)
        resolve_dtype(cfg)
        assert cfg.bf16 is bf16 and cfg.fp16 is False and precision.bf16 is bf16


def test_threads_under_accelerate():
    env = {"OMP_NUM_THREADS": "1", "ACCELERATE_MIXED_PRECISION": "no"}
    assert decide_threads(cores=8, env=env)[0] == 8
    assert decide_threads(cores=8, env={**env, "LOCAL_WORLD_SIZE": "2"})[0] == 4
    assert decide_threads(cores=8, env={**env, "OMP_NUM_THREADS": "3"})[0] is None  # the user's own value
    assert decide_threads(cores=8, env={"OMP_NUM_THREADS": "1"})[0] is None  # set by the user, not accelerate
    assert decide_threads(3, cores=8, env=env) == (3, "decselfmask.cpu_threads")
    assert decide_threads(cores=1, env=env)[0] == 1


def test_cpu_threads_key_is_validated():
    from pydantic import ValidationError

    from axolotl_decselfmask.args import DecSelfMaskConfig

    assert DecSelfMaskConfig(cpu_threads=4).cpu_threads == 4
    with pytest.raises(ValidationError, match="cpu_threads"):
        DecSelfMaskConfig(cpu_threads=0)


def test_spin_wait_warning_only_on_busy_cores_without_a_policy():
    assert wait_policy_warning(2, env={}, load=2.3, cores=2) is not None
    assert "OMP_WAIT_POLICY=PASSIVE" in wait_policy_warning(2, env={}, load=2.3, cores=2)
    assert wait_policy_warning(2, env={}, load=0.4, cores=2) is None  # a quiet machine: spinning is faster
    assert wait_policy_warning(2, env={"OMP_WAIT_POLICY": "PASSIVE"}, load=3.0, cores=2) is None
    assert wait_policy_warning(1, env={}, load=3.0, cores=2) is None  # one thread never waits for another


def test_the_bf16_measurement_keeps_its_side_of_one_on_a_shared_core():
    """The fastest of interleaved trials: a busy process on the same core does not flip the
    measured bf16/fp32 ratio across 1 (one timed pair did, once in five, on an AVX512-BF16 CPU)."""
    import os
    import subprocess
    import sys

    hardware.measure_cpu_bf16.cache_clear()
    quiet = hardware.measure_cpu_bf16()
    if 0.7 < quiet < 1.4:
        pytest.skip(f"bf16 and fp32 about as fast here ({quiet:.2f}x): no side to keep")
    core = sorted(os.sched_getaffinity(0))[0]
    busy = subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", "while True: pass"])
    try:
        old = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {core})
        try:
            loaded = []
            for _ in range(3):
                hardware.measure_cpu_bf16.cache_clear()
                loaded.append(hardware.measure_cpu_bf16())
        finally:
            os.sched_setaffinity(0, old)
    finally:
        busy.kill()
        hardware.measure_cpu_bf16.cache_clear()
    assert all((r < 1) == (quiet < 1) for r in loaded), (quiet, loaded)


KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def test_cuda_only_lora_kernels_are_off_on_a_cpu_without_hand_edits(tmp_path, tiny_llama):
    """Axolotl 0.19 switches every unset lora_*_kernel on for a LoRA (CUDA-only Triton kernels); on a CPU
    the plugin sets them off, unset or true, with one line; on a GPU it leaves them to the recipe."""
    from helpers import base_recipe, validate_recipe

    from axolotl_decselfmask.hardware import Precision, cpu_kernel_keys

    cpu, gpu = Precision("float32", "cpu", "AVX2, no native bf16"), Precision("bfloat16", "cuda", "GPU with bf16")
    raw = {k: v for k, v in base_recipe(tmp_path, tiny_llama).items() if k not in ("plugins", "decselfmask")}
    assert not any(k in raw for k in KERNELS)  # the tests' recipe sets none of them
    assert all(validate_recipe(raw)[k] is True for k in KERNELS)  # Axolotl alone: on, on any machine
    line = cpu_kernel_keys(raw, cpu)
    assert all(raw[k] is False for k in KERNELS) and "Axolotl would switch them on" in line
    assert all(validate_recipe(raw)[k] is False for k in KERNELS)  # and they stay off through validation
    recipe = {"adapter": "qlora", "lora_mlp_kernel": True, "lora_o_kernel": False}
    assert "lora_mlp_kernel set to true in the recipe" in cpu_kernel_keys(recipe, cpu)
    assert all(recipe[k] is False for k in KERNELS)
    assert cpu_kernel_keys(dict.fromkeys(KERNELS, False) | {"adapter": "lora"}, cpu) is None  # nothing to say
    assert cpu_kernel_keys({}, cpu) is None  # a full fine-tune: no LoRA to switch them on for
    recipe = {"adapter": "lora"}
    assert cpu_kernel_keys(recipe, gpu) is None and recipe == {"adapter": "lora"}


def test_the_plugin_turns_them_off_where_it_resolves_bf16_auto(tmp_path, caplog):
    import logging

    from axolotl_decselfmask.hardware import decide_precision
    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    if decide_precision().device != "cpu":
        pytest.skip("needs a machine without CUDA")
    recipe = {"base_model": "x", "adapter": "lora", "bf16": "auto", "output_dir": str(tmp_path / "out"),
              "lora_qkv_kernel": True, "decselfmask": {}}
    with caplog.at_level(logging.INFO):
        DecSelfMaskPlugin().register(recipe)
    assert all(recipe[k] is False for k in KERNELS) and recipe["bf16"] in (True, False)
    [line] = [r.getMessage() for r in caplog.records if "fused LoRA kernels" in r.getMessage()]
    assert "lora_qkv_kernel set to true in the recipe" in line


def test_no_forked_data_worker_on_a_cpu_unless_the_recipe_asks(tmp_path, tiny_llama):
    """Axolotl 0.19 gives stage 1 one data worker with a prefetch factor of 256 when a recipe sets none of the
    dataloader keys; on a CPU the plugin sets dataloader_num_workers: 0 (benchmarks/dataloader_workers.py: 2.5 GB
    less, same time), through validation; a recipe's own choice, or a GPU, is left as it is."""
    from helpers import base_recipe, validate_recipe

    from axolotl_decselfmask.hardware import DATALOADER_KEYS, Precision, cpu_data_worker_keys

    cpu, gpu = Precision("float32", "cpu", "AVX2, no native bf16"), Precision("bfloat16", "cuda", "GPU with bf16")
    raw = {k: v for k, v in base_recipe(tmp_path, tiny_llama).items() if k not in ("plugins", "decselfmask")}
    assert not any(k in raw for k in DATALOADER_KEYS)
    alone = validate_recipe(raw)  # Axolotl alone: a worker and a prefetch factor of 256
    assert alone["dataloader_num_workers"] >= 1 and alone["dataloader_prefetch_factor"] == 256
    line = cpu_data_worker_keys(raw, cpu)
    assert raw["dataloader_num_workers"] == 0 and "dataloader_num_workers" in line
    validated = validate_recipe(raw)
    assert validated["dataloader_num_workers"] == 0 and validated["dataloader_prefetch_factor"] is None
    for key, value in (("dataloader_num_workers", 2), ("dataloader_prefetch_factor", 4), ("dataloader_pin_memory", False)):
        recipe = {key: value}
        assert cpu_data_worker_keys(recipe, cpu) is None and recipe == {key: value}
    recipe = {}
    assert cpu_data_worker_keys(recipe, gpu) is None and recipe == {}


def test_the_plugin_sets_no_data_worker_where_it_decides_the_machine(tmp_path, caplog):
    import logging

    from axolotl_decselfmask.hardware import decide_precision
    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    if decide_precision().device != "cpu":
        pytest.skip("needs a machine without CUDA")
    recipe = {"base_model": "x", "bf16": "auto", "output_dir": str(tmp_path / "out"), "decselfmask": {}}
    with caplog.at_level(logging.INFO):
        DecSelfMaskPlugin().register(recipe)
    assert recipe["dataloader_num_workers"] == 0
    assert any("dataloader_num_workers: 0" in r.getMessage() for r in caplog.records)
    kept = {"base_model": "x", "bf16": "auto", "output_dir": str(tmp_path / "out"), "dataloader_num_workers": 1,
            "decselfmask": {}}
    DecSelfMaskPlugin().register(kept)
    assert kept["dataloader_num_workers"] == 1
