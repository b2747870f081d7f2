"""scripts/llama_build.py: the build variant setup makes, and its repack probe (fault injected)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
import sys
from types import ModuleType

import pytest

from custom_components.sarai_omni.engine.protocol import FAULTS_ENV

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_build.py"
XEON_AMX = "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
EPYC = "flags\t\t: fpu sse2 avx avx2 fma f16c bmi2 sha_ni\n"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_build", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llama_build"] = module
    spec.loader.exec_module(module)
    return module


def test_amx_free_build_keeps_avx512_and_leaves_amx_out(build: ModuleType) -> None:
    flags = build.cpu_flags(XEON_AMX)
    assert build.has_amx(flags)
    args = build.cmake_args("noamx", flags).split()
    assert "-DGGML_NATIVE=OFF" in args  # -march=native would turn AMX back on
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON", "-DGGML_AVX2=ON"} <= set(args)
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= set(args)
    assert "-DGGML_AVX512_VBMI=OFF" in args  # not in these flags: never compiled in


def test_other_cpus_keep_the_native_build(build: ModuleType) -> None:
    assert not build.has_amx(build.cpu_flags(EPYC))
    assert build.cmake_args("native", build.cpu_flags(EPYC)) == ""
    assert build.cmake_args("cuda", set()) == "-DGGML_CUDA=on"


async def test_probe_tells_a_trapping_repack_from_a_working_one(
    build: ModuleType, tiny_qwen2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An F16 model: llama.cpp has no AMX kernels for it, so its repacked load runs on every CPU
    # (setup probes the quantized gemma, which does reach AMX where the CPU has it).
    assert await build.probe(str(tiny_qwen2)) == "ok"
    monkeypatch.setenv(FAULTS_ENV, "repack=SIGILL")  # an AMX CPU whose AMX traps
    assert (await build.probe(str(tiny_qwen2))).startswith("SIGILL: illegal instruction")


def test_cuda_needs_a_gpu_not_only_a_toolkit(build: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build.shutil, "which", lambda name: "/usr/local/bin/nvcc")  # a toolkit, as here
    gpu = Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/gpus").is_dir()
    assert build.first_variant() == ("cuda" if gpu else "native")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    assert build.first_variant() == "native"
