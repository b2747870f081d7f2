"""Which llama-cpp-python build this machine gets, and whether its weight repacking runs here.

Used by scripts/setup (standard library only; `probe` needs the project's .venv):

    python scripts/llama_build.py variant          # native | cuda: the build to make first
    python scripts/llama_build.py cmake-args NAME  # CMAKE_ARGS of build NAME (native, noamx, cuda)
    python scripts/llama_build.py probe MODEL      # prints "ok", or how a repacked load died

On Intel CPUs whose flags list AMX but whose AMX instructions trap (some VMs), a native build's
weight repacking picks the AMX kernels and the process dies with SIGILL. The `noamx` build keeps
every other instruction set the CPU has (AVX-512 with its repacked kernels included) and leaves AMX
out, so repacking stays available where it is safe; the engine's calibration then measures whether
it pays. Kernels without repacking are the same in both builds, so `noamx` is never the slower one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
import shutil
import sys

ROOT = Path(__file__).resolve().parent.parent
# ggml's x86 options, by the /proc/cpuinfo flag that allows each (AMX deliberately absent).
X86_OPTIONS = {
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_BMI2": "bmi2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}
AMX_FLAGS = ("amx_tile", "amx_int8", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def has_amx(flags: set[str]) -> bool:
    return any(f in flags for f in AMX_FLAGS)


def first_variant() -> str:
    """CUDA where a toolkit and an NVIDIA GPU are both there (n_gpu_layers then offloads), else native.

    A toolkit alone is not enough: images ship nvcc without a GPU, and a CUDA build there is slow,
    may not even link, and would offload nothing.
    """
    gpu = Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir()
    return "cuda" if shutil.which("nvcc") and gpu else "native"


def cmake_args(variant: str, flags: set[str]) -> str:
    if variant == "native":
        return ""
    if variant == "cuda":
        return "-DGGML_CUDA=on"
    if variant == "noamx":
        on = [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for opt, flag in X86_OPTIONS.items()]
        amx_off = ["-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
        return " ".join(["-DGGML_NATIVE=OFF", *on, *amx_off])
    raise SystemExit(f"unknown build variant {variant!r}")


async def probe(model: str) -> str:
    """Load `model` with weight repacking in a worker process and decode a little: "ok" or its death."""
    sys.path.insert(0, str(ROOT))
    from custom_components.sarai_omni.engine import protocol
    from custom_components.sarai_omni.engine.backends.client import WorkerClient
    from custom_components.sarai_omni.engine.errors import WorkerCrashed, describe_exit

    client = WorkerClient("repack probe")
    try:
        await client.call(protocol.OP_LOAD, {"model_path": model, "n_ctx": 256, "n_threads": 2, "repack": True})
        await client.call(protocol.OP_BENCH, {"prompt_tokens": 16, "gen_tokens": 2})
    except WorkerCrashed as err:
        return describe_exit(err.exit_code)
    finally:
        await client.close()
    return "ok"


def main(argv: list[str]) -> int:
    command, *rest = argv or ["variant"]
    if command == "variant":
        print(first_variant())
    elif command == "cmake-args" and rest:
        print(cmake_args(rest[0], cpu_flags()))
    elif command == "has-amx":
        return 0 if has_amx(cpu_flags()) else 1
    elif command == "probe" and rest:
        print(asyncio.run(probe(rest[0])))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
