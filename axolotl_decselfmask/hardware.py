"""The machine a run is on: which precision to compute in, how many CPU threads to use, and handing
freed memory back to it.

One decision for every stage (relevance, stage 1, stage 2, probing, pseudo-labels, evaluation):

- on CUDA, bfloat16 where the GPU supports it, else float32;
- on a CPU, bfloat16 only where the processor has native bfloat16 units: AMX, or
  AVX512-BF16 where a short measurement finds bfloat16 faster than float32. Elsewhere
  (AVX2-only processors, AVX-512 without AVX512-BF16) torch emulates bfloat16, and a forward
  pass ran 5.5x, a forward plus backward 23x, slower than float32 (docs/benchmark.md).

The decision reads torch's own dispatch level (``torch.backends.cpu.get_cpu_capability()``,
which ``ATEN_CPU_CAPABILITY`` lowers), the processor flags of ``/proc/cpuinfo`` and oneDNN's
ISA cap (``ONEDNN_MAX_CPU_ISA``), so that a machine told to behave as AVX2 is treated as AVX2.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) at or above which its bfloat16 kernels are native.
_ONEDNN_NATIVE_BF16 = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
                       "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                       "AVX10_2_512_AMX_2", "ALL", "DEFAULT")
SLOWDOWN_NOTE = ("on a CPU without native bfloat16 a forward pass ran 5.5x and a training step 23x slower "
                 "than in float32 (AVX2 machine, docs/benchmark.md)")


@dataclass(frozen=True)
class CpuInfo:
    """What decides bfloat16 on a CPU."""

    capability: str  # torch's dispatch level: "AVX512", "AVX2", "DEFAULT", ...
    flags: frozenset[str]  # /proc/cpuinfo flags (empty where there is no such file)
    model_name: str
    onednn_isa: str  # ONEDNN_MAX_CPU_ISA, "" when unset

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def avx512_bf16(self) -> bool:
        return "avx512_bf16" in self.flags

    def describe(self) -> str:
        extras = [name for name, on in (("AMX", self.amx), ("AVX512-BF16", self.avx512_bf16)) if on]
        if self.capability != "AVX512":
            extras = []  # torch dispatches below AVX-512 (ATEN_CPU_CAPABILITY): the flags do not apply
        isa = f", oneDNN capped at {self.onednn_isa}" if self.onednn_isa else ""
        return self.capability + (f" with {'+'.join(extras)}" if extras else "") + isa


@dataclass(frozen=True)
class Precision:
    """The compute precision of a run and why."""

    dtype: str  # "bfloat16" or "float32"
    device: str  # "cuda" or "cpu"
    reason: str  # "AVX2, no native bf16"

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def _parse_cpuinfo(text: str) -> tuple[frozenset[str] | None, str]:
    """The first processor's flags (None where the file has no flags line) and model name."""
    flags, model = None, "unknown processor"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and flags is None:
            flags = frozenset(value.split())
        elif key == "model name" and model == "unknown processor":
            model = value.strip()
    return flags, model


def _cpuinfo_text() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def read_cpu_info() -> CpuInfo:
    import torch

    flags, model = _parse_cpuinfo(_cpuinfo_text() or "")
    return CpuInfo(torch.backends.cpu.get_cpu_capability(), flags or frozenset(), model,
                   os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper())


def cpu_bf16_native(info: CpuInfo, measure=None) -> tuple[bool, str]:
    """Whether bfloat16 runs on native units of this CPU, and the reason in a few words.

    ``measure`` (no arguments, returns bf16 time / fp32 time) is called only for a processor
    with AVX512-BF16 and no AMX, the one case the flags alone do not decide.
    """
    if info.capability not in ("AVX512",):
        return False, f"{info.capability}, no native bf16"
    if info.onednn_isa and info.onednn_isa not in _ONEDNN_NATIVE_BF16:
        return False, f"{info.describe()}, no native bf16"
    if info.amx:
        return True, f"{info.describe()}, native bf16"
    if info.avx512_bf16:
        ratio = (measure or measure_cpu_bf16)()
        faster = ratio < 1.0
        return faster, f"{info.describe()}, bf16 measured {ratio:.2f}x the time of fp32"
    return False, f"{info.describe()}, no native bf16"


def decide_precision(requested=None, *, cuda: bool | None = None, cuda_bf16: bool | None = None,
                     cpu: CpuInfo | None = None, measure=None) -> Precision:
    """The precision of a run: ``requested`` is the recipe's ``bf16`` (None or ``"auto"``, True, False).

    An explicit True or False is kept (a True on a CPU without native bf16 runs, slowly: see
    :func:`slow_bf16_warning`); ``auto`` and unset follow the machine.
    """
    if cuda is None or cuda_bf16 is None:
        import torch

        cuda = torch.cuda.is_available() if cuda is None else cuda
        cuda_bf16 = (cuda and torch.cuda.is_bf16_supported()) if cuda_bf16 is None else cuda_bf16
    device = "cuda" if cuda else "cpu"
    if cuda:
        native, reason = bool(cuda_bf16), ("GPU with bf16" if cuda_bf16 else "GPU without bf16")
    else:
        native, reason = cpu_bf16_native(cpu or read_cpu_info(), measure)
    if requested is True:
        return Precision("bfloat16", device, reason + ("" if native else "; bf16: true in the recipe"))
    if requested is False:
        return Precision("float32", device, reason + "; bf16: false in the recipe")
    return Precision("bfloat16" if native else "float32", device, reason)


def slow_bf16_warning(precision: Precision, cpu: CpuInfo | None = None) -> str | None:
    """The warning for bf16 on a CPU that emulates it, else None."""
    if precision.device != "cpu" or not precision.bf16 or "bf16: true in the recipe" not in precision.reason:
        return None
    info = cpu or read_cpu_info()
    return (f"decselfmask: bf16: true on {info.model_name} ({info.describe()}), which has no native bfloat16: "
            f"{SLOWDOWN_NOTE}. Set bf16: auto (float32 here) unless you need bfloat16.")


@functools.lru_cache(maxsize=1)
def measure_cpu_bf16(size: int = 384, reps: int = 3, trials: int = 5) -> float:
    """bf16 time / fp32 time of a linear layer's forward and backward on this CPU (2.4-2.7 s measured on a busy core).

    The two are timed in turn ``trials`` times and the fastest of each is compared: a core shared
    with another process slows single timings (a single pair once read 3.6x on a machine where bf16
    takes a quarter of fp32's time), the fastest rarely."""
    import torch

    def setup(dtype):
        layer = torch.nn.Linear(size, 4 * size).to(dtype)
        x = torch.randn(256, size, dtype=dtype, requires_grad=True)
        layer(x).sum().backward()  # warm-up
        return layer, x

    def run(layer, x):
        start = time.perf_counter()
        for _ in range(reps):
            layer(x).sum().backward()
        return time.perf_counter() - start

    cases = {dtype: setup(dtype) for dtype in (torch.bfloat16, torch.float32)}
    best = {dtype: float("inf") for dtype in cases}
    for _ in range(trials):  # in turn, so that a busy moment slows one trial of each, not all of one
        for dtype in cases:
            best[dtype] = min(best[dtype], run(*cases[dtype]))
    return best[torch.bfloat16] / max(best[torch.float32], 1e-9)


def resolve_recipe_precision(cfg) -> Precision:
    """Set the recipe's ``bf16`` (and ``fp16`` when unset) from :func:`decide_precision`.

    Axolotl 0.19 turns ``bf16: auto`` on a machine without a bf16 GPU into ``fp16: true`` when
    ``fp16`` is unset; the plugin decides first, so that a CPU never trains in float16.
    """
    requested = cfg.get("bf16")
    precision = decide_precision(None if requested in (None, "auto") else bool(requested))
    cfg["bf16"] = precision.bf16
    if cfg.get("fp16") in (None, "auto"):
        cfg["fp16"] = False
    return precision


#: Axolotl 0.19's fused LoRA kernels (Triton, CUDA only); its ``check_auto_enable_lora_kernels``
#: turns every unset one on for ``adapter: lora``/``qlora``, whatever the device (the same four in 0.20, 0.21)
CUDA_ONLY_KERNEL_KEYS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def cpu_kernel_keys(cfg, precision: Precision) -> str | None:
    """On a CPU, set the recipe's CUDA-only LoRA kernel keys to false (unset or true: they cannot
    run there); returns the log line, or None when there was nothing to do (a GPU, or all false)."""
    if precision.device != "cpu":
        return None
    switched_on = [k for k in CUDA_ONLY_KERNEL_KEYS if cfg.get(k)]
    unset = [k for k in CUDA_ONLY_KERNEL_KEYS if cfg.get(k) is None]
    if not switched_on and not (unset and cfg.get("adapter") in ("lora", "qlora")):
        return None  # all false already, or no LoRA for Axolotl to switch them on for
    for key in CUDA_ONLY_KERNEL_KEYS:
        cfg[key] = False
    what = (f"{', '.join(switched_on)} set to true in the recipe" if switched_on
            else "Axolotl would switch them on for a LoRA")
    return (f"decselfmask: on a CPU the fused LoRA kernels ({', '.join(CUDA_ONLY_KERNEL_KEYS)}) are off: they need "
            f"CUDA ({what}); nothing to change in the recipe")


DATALOADER_KEYS = ("dataloader_num_workers", "dataloader_pin_memory", "dataloader_prefetch_factor")


def cpu_data_worker_keys(cfg, precision: Precision) -> str | None:
    """On a CPU, ``dataloader_num_workers: 0`` where the recipe sets none of :data:`DATALOADER_KEYS`; returns the
    log line, or None (a GPU, or a recipe that sets one of them: Axolotl's and the user's choice stand).

    Left unset, Axolotl gives stage 1 one data worker (its GPU count, 1 on a CPU) with a prefetch factor of 256:
    a forked copy of the trainer on the same cores. For the quickstart's stage 1 that process tree peaked at
    6.3 GB against 3.8 GB without the worker, in the same time (0.98x; benchmarks/dataloader_workers.py,
    docs/benchmark.md)."""
    if precision.device != "cpu" or any(cfg.get(k) is not None for k in DATALOADER_KEYS):
        return None
    cfg["dataloader_num_workers"] = 0
    return ("decselfmask: on a CPU stage 1 loads its batches in the trainer's own process (dataloader_num_workers: "
            "0): Axolotl's default data worker is a copy of the trainer that peaked at 2.5 GB more for the "
            "quickstart, in the same time; set dataloader_num_workers in the recipe to choose otherwise")


def recipe_precision(cfg) -> Precision:
    """The precision of a recipe whose ``bf16`` the plugin resolved (True/False), or still ``auto``."""
    requested = cfg.get("bf16") if hasattr(cfg, "get") else getattr(cfg, "bf16", None)
    return decide_precision(None if requested in (None, "auto") else bool(requested))


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX tiles (``amx_tile`` in /proc/cpuinfo's flags); unknown counts as yes."""
    text = _cpuinfo_text() if cpuinfo is None else cpuinfo
    flags = _parse_cpuinfo(text)[0] if text is not None else None
    return flags is None or "amx_tile" in flags


# ---------------------------------------------------------------------------------------- threads

def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decide_threads(setting: int | str = "auto", *, cores: int | None = None, env: dict | None = None) -> tuple[int | None, str]:
    """CPU threads for this process: (number, or None to leave torch's choice; why).

    ``accelerate launch``, through which ``axolotl train`` starts, sets ``OMP_NUM_THREADS=1``
    when it is unset, so a one-process CPU run trains on one core. ``auto`` then gives the
    process its share of the cores; any other ``OMP_NUM_THREADS`` is the user's and is kept.
    """
    env = os.environ if env is None else env
    cores = available_cores() if cores is None else cores
    if setting != "auto":
        return int(setting), "decselfmask.cpu_threads"
    accelerate = "ACCELERATE_MIXED_PRECISION" in env  # set in every process that accelerate launches
    if env.get("OMP_NUM_THREADS") == "1" and accelerate:
        local = max(int(env.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
        return max(cores // local, 1), f"{cores} cores / {local} process(es); accelerate had set OMP_NUM_THREADS=1"
    return None, ("OMP_NUM_THREADS=" + env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else "torch default"


def wait_policy_warning(threads: int, *, env: dict | None = None, load: float | None = None,
                        cores: int | None = None) -> str | None:
    """A warning when torch's OpenMP threads will spin-wait on cores that other processes keep busy.

    libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, before any plugin code runs, so
    the plugin cannot set it for its own process; it can only say so. With another busy process
    on 2 cores, spin-waiting made a forward pass 8-9x slower (docs/benchmark.md).
    """
    env = os.environ if env is None else env
    if threads < 2 or env.get("OMP_WAIT_POLICY"):
        return None
    cores = available_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            return None
    if load < cores - 0.5:
        return None
    return (f"decselfmask: the {cores} cores are busy (load average {load:.1f}) and OMP_WAIT_POLICY is unset: "
            "torch's threads spin-wait, which made forward passes 8-9x slower on a shared machine. Export "
            "OMP_WAIT_POLICY=PASSIVE before `axolotl train` (it cannot be changed once torch has started).")


def apply_threads(setting: int | str = "auto") -> tuple[int, str]:
    """Set torch's CPU threads by :func:`decide_threads`; returns (threads in use, why)."""
    import torch

    threads, why = decide_threads(setting)
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads(), why


def environment(precision: Precision | None = None) -> dict:
    """What a result was measured on, for ``metrics.json`` and the model card."""
    import torch
    import transformers

    info = read_cpu_info()
    out = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": info.model_name,
        "cpu_capability": info.describe(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if precision is not None:
        out["dtype"] = precision.dtype
        out["precision_reason"] = precision.reason
    return out


def log_line(precision: Precision, threads: int, why: str) -> str:
    return f"decselfmask: precision {precision.dtype} ({precision.reason}); {threads} CPU thread(s) ({why})"


def set_up_machine(cfg, block: dict) -> None:
    """Precision and CPU threads for a raw recipe (the plugin's ``register``), decided before Axolotl's
    own dtype resolution; the lines a user can act on (slow bfloat16, spinning threads, CUDA-only keys) logged."""
    precision = resolve_recipe_precision(cfg)
    warning = slow_bf16_warning(precision)
    if warning:
        LOG.warning(warning)
    setting = block.get("cpu_threads", "auto")
    threads, why = apply_threads(setting if setting == "auto" or isinstance(setting, int) else "auto")
    LOG.info(log_line(precision, threads, why))
    if precision.device == "cpu":
        spin = wait_policy_warning(threads)
        if spin:
            LOG.warning(spin)
        kernels = cpu_kernel_keys(cfg, precision)  # the CUDA-only lora_*_kernel keys off
        if kernels:
            LOG.info(kernels)
        workers = cpu_data_worker_keys(cfg, precision)  # no forked data worker beside the trainer
        if workers:
            LOG.info(workers)


# ----------------------------------------------------------------------------------------- memory

def release_freed_memory() -> bool:
    """Collect garbage, empty the CUDA cache, and hand the C allocator's free pages back to the
    machine (glibc ``malloc_trim(0)``). Called when a model is dropped in a process that goes on:
    after the relevance model of an in-process precompute. Without it the freed heap stays in the
    process (a Qwen2.5-0.5B teacher left the trainer several GB, docs/benchmark.md), and the data
    worker that Axolotl forks for training (``dataloader_num_workers``) copies those pages as the
    trainer reuses them. True where ``malloc_trim`` ran (glibc)."""
    import ctypes
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return False
    return True


__all__ = ["CpuInfo", "Precision", "apply_threads", "cpu_data_worker_keys", "cpu_kernel_keys", "decide_precision",
           "decide_threads", "environment", "read_cpu_info", "recipe_precision", "release_freed_memory",
           "resolve_recipe_precision", "set_up_machine", "slow_bf16_warning"]
