"""The transformers backend's figures (issue 14): the tiny Qwen2.5-Omni measured per load option, and
the real Qwen2.5-Omni-7B's expected memory per dtype from its architecture.

- Measured, side by side in one run: for float32, bfloat16 and int8 weights, the worker's RSS idle
  (torch imported), loaded, and its peaks while generating and while speaking (sampled every 50 ms),
  decode tokens/s (medians of alternating runs), the talker's real-time factor, and the engine's
  estimate beside the measurement.
- Expected, for the 7B: its tensors' shapes come from transformers itself (the model built on the
  meta device from the 7B's config.json values, no weights), then the same estimate the pool enforces
  (hf.HFInfo) at the quality context per dtype.

Writes docs/benchmarks/omni-transformers.json + .png; the last line printed is the JSON summary.
`python benchmarks/omni_transformers.py [--runs N]` (needs the torch venv: scripts/setup).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
import subprocess
import sys
import tempfile
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import MB, RssSampler, machine, median, worker_pids  # noqa: E402
from benchmarks.plots import _label, _plt, _save  # noqa: E402
from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig, defaults  # noqa: E402
from custom_components.sarai_omni.engine.backends.base import Prespawns  # noqa: E402
from custom_components.sarai_omni.engine.backends.transformers.folder import HFInfo, Tensor, read_folder  # noqa: E402
from tests.specs import folder_spec  # noqa: E402
from tests.torch_env import MISSING, torch_python, write_tiny_omni  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
OPTIONS: dict[str, dict[str, str]] = {
    "float32": {},
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"quantization": "int8"},
}
# Qwen/Qwen2.5-Omni-7B's config.json where it differs from transformers' defaults (vision tower and
# talker); the count checks it: 10.73 B in all, the vision tower 0.68 B (the report's 675 M).
SEED_7B = {
    "thinker_config": {"vision_config": {"hidden_size": 1280, "out_hidden_size": 3584, "intermediate_size": 3420,
                                         "depth": 32, "num_heads": 16}},
    "talker_config": {"hidden_size": 896, "intermediate_size": 18944, "num_attention_heads": 12,
                      "num_key_value_heads": 4, "num_hidden_layers": 24, "head_dim": 128, "embedding_size": 3584},
}  # fmt: skip
SHAPES = """
import json, sys, torch
from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration
config = Qwen2_5OmniConfig(**json.loads(sys.argv[1]))
with torch.device("meta"):
    model = Qwen2_5OmniForConditionalGeneration(config)
json.dump({"config": config.to_dict(), "tensors": [[n, list(p.shape)] for n, p in model.state_dict().items()]},
          sys.stdout)
"""
PROMPT = [{"role": "user", "content": "Describe the kitchen lights and the garden camera in one sentence."}]
SENTENCE = "Hola, ¿qué tal? The kitchen light is on."


def seed_7b(python: Path) -> dict[str, Any]:
    """Expected resident memory of Qwen2.5-Omni-7B per dtype (transformers' own shapes, no weights)."""
    done = subprocess.run(
        [str(python), "-c", SHAPES, json.dumps(SEED_7B)], capture_output=True, text=True, check=True, timeout=600
    )
    data = json.loads(done.stdout)
    tensors = tuple(Tensor(name, tuple(shape)) for name, shape in data["tensors"])
    info = HFInfo(Path("Qwen2.5-Omni-7B"), "qwen2_5_omni", data["config"], tensors, speakers_file=True)
    n_ctx = defaults.QUALITY_N_CTX
    per_dtype = {
        name: {
            "weights_mb": round(info.weight_bytes(opts.get("dtype", "float32"), opts.get("quantization", "none")) / MB),
            "expected_rss_mb": round(
                info.estimate_bytes(opts.get("dtype", "float32"), n_ctx, opts.get("quantization", "none")) / MB
            ),
        }
        for name, opts in OPTIONS.items()
    }
    return {
        "parameters_b": round(info.parameters() / 1e9, 3),
        "components_b": {c: round(info.parameters(c) / 1e9, 3) for c in ("thinker", "talker", "token2wav")},
        "vision_b": round(sum(t.elements for t in tensors if ".visual." in t.name) / 1e9, 3),
        "n_ctx": n_ctx,
        "kv_mb_per_dtype": {d: round(n_ctx * info.kv_bytes_per_token(d) / MB) for d in ("float32", "bfloat16")},
        "speech_mb": round(info.speech_bytes() / MB),
        "per_dtype": per_dtype,
    }


async def measure(folder: Path, python: Path, runs: int) -> dict[str, Any]:
    """Each option's worker: RSS by phase, decode speed and speech, alternating runs (medians)."""

    def engine(opts: dict[str, str]) -> Engine:
        spec = folder_spec("quality", str(folder), str(python), n_threads=2, n_ctx=2048, **opts)
        return Engine(EngineConfig(models=(spec,), ram_budget_mb=8192))

    engines = {name: engine(opts) for name, opts in OPTIONS.items()}
    tps: dict[str, list[float]] = {n: [] for n in engines}
    rtf: dict[str, list[float]] = {n: [] for n in engines}
    out: dict[str, Any] = {}
    try:
        for name, eng in engines.items():
            await eng.prepare()
            backend = eng.pool.slot("quality").backend
            assert isinstance(backend, Prespawns)
            await backend.prespawn()
            await asyncio.sleep(3)  # the idle worker imports torch meanwhile
            out[name] = {"idle_rss_mb": round(eng.pool.slot("quality").backend.resident_bytes() / MB)}
            await eng.load("quality")
            out[name] |= {
                "loaded_rss_mb": round(eng.pool.slot("quality").backend.resident_bytes() / MB),
                "estimate_mb": round(eng.pool.slot("quality").estimate / MB),
                "load_ms": eng.status("quality").load_ms,
            }
        for _ in range(runs):  # alternate the options: drift on a busy machine hits all alike
            for name, eng in engines.items():
                with RssSampler(lambda e=eng: worker_pids(e)) as rss:
                    with rss.during("generate"):
                        request = ChatRequest(PROMPT, role="quality", max_tokens=48, temperature=0.0, ignore_eos=True)
                        tps[name].append((await eng.complete(request)).tokens_per_second)
                    with rss.during("speak"):
                        speech = await eng.speak("quality", SENTENCE)
                        rtf[name].append(speech.ms / 1000 / speech.seconds)
                peaks = rss.peaks_mb()
                for phase in ("generate", "speak"):
                    key = f"{phase}_peak_rss_mb"
                    out[name][key] = max(out[name].get(key, 0), peaks.get(phase, 0))
                out[name]["speech_seconds"] = round(speech.seconds, 2)
    finally:
        for eng in engines.values():
            await eng.close()
    for name in engines:
        out[name]["decode_tps"] = median(tps[name])
        out[name]["speech_real_time_factor"] = median(rtf[name])
        out[name]["estimate_over_peak"] = round(
            out[name]["estimate_mb"] / max(out[name]["generate_peak_rss_mb"], out[name]["speak_peak_rss_mb"]), 3
        )
    base = out["float32"]["decode_tps"]
    for name in engines:
        out[name]["decode_vs_float32"] = round(out[name]["decode_tps"] / base, 3) if base else 0.0
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    seed = result["seed_7b"]["per_dtype"]
    bars = left.bar(list(seed), [v["expected_rss_mb"] / 1024 for v in seed.values()], color="#4c72b0")
    _label(left, bars)
    left.set_ylabel("GB resident (expected, n_ctx 8192)")
    left.set_title(f"Qwen2.5-Omni-7B on transformers ({result['seed_7b']['parameters_b']} B parameters)", fontsize=9)
    tiny = result["tiny"]
    names = list(tiny)
    x = range(len(names))
    peak = [max(tiny[n]["generate_peak_rss_mb"], tiny[n]["speak_peak_rss_mb"]) for n in names]
    b1 = right.bar([i - 0.2 for i in x], peak, 0.4, label="measured peak RSS")
    b2 = right.bar([i + 0.2 for i in x], [tiny[n]["estimate_mb"] for n in names], 0.4, label="engine's estimate")
    _label(right, b1, "{:.0f}")
    _label(right, b2, "{:.0f}")
    right.set_xticks(list(x), [f"{n}\n{tiny[n]['decode_tps']:.0f} tok/s" for n in names])
    right.set_ylabel("MB")
    right.set_title("Tiny random Omni (1.5 M parameters): the worker's own memory", fontsize=9)
    right.legend(fontsize=8)
    _save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    python = torch_python()
    if python is None:
        print(MISSING)
        return 1
    with tempfile.TemporaryDirectory(prefix="sarai_omni_tiny_") as tmp:
        folder = write_tiny_omni(Path(tmp) / "tiny-omni", python)
        tiny_parameters = read_folder(folder).parameters()
        tiny = asyncio.run(measure(folder, python, args.runs))
    result = {
        "machine": machine(2),
        "torch_venv": str(python),
        "tiny": tiny,
        "tiny_parameters": tiny_parameters,
        "seed_7b": seed_7b(python),
        "runs": args.runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "omni-transformers.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, OUT / "omni-transformers.png")
    summary = {
        "tiny": {n: {k: v[k] for k in ("loaded_rss_mb", "speak_peak_rss_mb", "decode_tps", "speech_real_time_factor")}
                 for n, v in tiny.items()},
        "seed_7b_expected_rss_mb": {n: v["expected_rss_mb"] for n, v in result["seed_7b"]["per_dtype"].items()},
    }  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
