"""End of speech -> transcript on Qwen2.5-Omni-7B's shape, today's path and this project's, side by
side in one run (2 threads by default).

- before: llama.cpp without the project's patch (an unpatched build's lib/, loaded by the workers
  through MTMD_CPP_LIB / LLAMA_CPP_LIB_PATH): every clip padded to a 30 s window (750 audio tokens),
  the whole clip sent when the speaker stops (what the STT entity did before).
- whole: the patched llama.cpp (2 s windows, 25 tokens/s), the whole clip sent at the end.
- streamed: the patched llama.cpp, the clip arriving in real time: the session starts with the
  first audio, each 2 s window is prefilled as soon as it is complete, and at the end of speech only
  the tail and the transcript remain (the STT entity's path now).

Each request writes a transcript of TRANSCRIPT_TOKENS tokens (random weights never say when to stop;
a 2 s command's transcript is about that long). The floor is what the end of speech must still cost
at this machine's rates, measured in the same run: the tokens left after the end of speech (the tail
window's audio tokens, <|audio_eos|> and the prompt's end) at the prefill rate, plus the transcript
at the decode rate. Audio tokens per clip length come from each library's own tokenizer; the
fidelity against transformers (tiny Omni, tests/engine/test_audio_fidelity.py) is run too when the
torch venv exists. JSON + PNG into docs/benchmarks/ (--out), the summary as the last line.

    .venv/bin/python benchmarks/bench_audio.py [--tiny] [--threads N] [--repeat N] [--before-lib DIR]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
import contextlib
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any
import zipfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import seed_models  # noqa: E402
from benchmarks.common import engine, machine, save, spec  # noqa: E402
from custom_components.sarai_omni.audio import transcription_prompt  # noqa: E402
from custom_components.sarai_omni.engine import ChatRequest, ChatResult, Engine  # noqa: E402
from tests.conftest import read_pcm, write_speechlike  # noqa: E402
from tests.tiny_models import VL_TEMPLATE, write_omni_mmproj, write_text_model  # noqa: E402
from tests.torch_env import CACHE  # noqa: E402

TRANSCRIPT_TOKENS = 8
WINDOW_BYTES = 2 * 16000 * 2
ROLE = "quality"
OUT = ROOT / "docs" / "benchmarks"


def before_lib(given: Path | None) -> Path:
    """lib/ of an unpatched llama-cpp-python 0.3.36 build: given, or unpacked from an unpatched
    wheel in the wheelhouse (scripts/setup built those before the patch), or built once (~6 min)."""
    if given:
        return given
    target = CACHE / "unpatched-lib"
    if (target / "llama_cpp" / "lib" / "libmtmd.so").is_file():
        return target / "llama_cpp" / "lib"
    wheels = sorted((CACHE / "wheels").glob("*/llama_cpp_python-0.3.36-*.whl"))
    if not wheels:
        folder = CACHE / "wheels" / "unpatched"
        print("building the unpatched llama-cpp-python 0.3.36 wheel (~6 min, once)", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
             "-w", str(folder), "llama-cpp-python==0.3.36"], check=True,
        )  # fmt: skip
        wheels = sorted(folder.glob("llama_cpp_python-0.3.36-*.whl"))
    with zipfile.ZipFile(wheels[0]) as whl:
        whl.extractall(target, [n for n in whl.namelist() if n.startswith("llama_cpp/lib/")])
    return target / "llama_cpp" / "lib"


@contextlib.contextmanager
def library(lib: Path | None) -> Iterator[None]:
    """Workers started in this block load llama.cpp from `lib` (None: the installed, patched one)."""
    names = ("MTMD_CPP_LIB", "LLAMA_CPP_LIB_PATH")
    saved = {n: os.environ.get(n) for n in names}
    if lib is not None:
        os.environ.update(dict.fromkeys(names, str(lib)))
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def turn(path: str) -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": transcription_prompt("en")}, {"type": "audio", "path": path}]
    return [{"role": "user", "content": parts}]


def request(messages: list[dict[str, Any]], **kw: Any) -> ChatRequest:
    return ChatRequest(messages, role=ROLE, max_tokens=TRANSCRIPT_TOKENS, ignore_eos=True, temperature=0.0, **kw)


async def whole(eng: Engine, clip: Path) -> dict[str, float]:
    """The clip sent when the speaker stops: end of speech -> transcript is the whole request."""
    started = time.perf_counter()
    result = await eng.complete(request(turn(str(clip))))
    return figures(result, started, tail_tokens=result.prompt_tokens)


async def streamed(eng: Engine, clip: Path, session: str) -> dict[str, float]:
    """The clip arriving in real time; the clock starts when it ends."""
    pcm = read_pcm(clip)
    seconds, messages = len(pcm) / 32000, turn("stream")
    spoken_from, at_the_end = time.perf_counter(), [0]  # audio tokens of a window completed by the end itself

    async def speak() -> None:
        held = (await eng.listen(ROLE, session, messages, b"")).audio_tokens
        for start in range(0, len(pcm) - WINDOW_BYTES + 1, WINDOW_BYTES):
            await asyncio.sleep(max(0.0, spoken_from + (start + WINDOW_BYTES) / 32000 - time.perf_counter()))
            now = (await eng.listen(ROLE, session, messages, pcm[start : start + WINDOW_BYTES])).audio_tokens
            if start + WINDOW_BYTES == len(pcm):
                at_the_end[0] = now - held
            held = now

    feeding = asyncio.create_task(speak())
    await asyncio.sleep(max(0.0, spoken_from + seconds - time.perf_counter()))
    ended = time.perf_counter()
    await feeding
    backlog_ms = (time.perf_counter() - ended) * 1000  # windows still being prefilled at the end
    tail = pcm[len(pcm) // WINDOW_BYTES * WINDOW_BYTES :]
    result = await eng.complete(request(messages, listening=session, pcm=tail))
    # what cannot be heard before the end of speech: a window completed by the end itself, the tail's
    # audio tokens, <|audio_eos|> and the prompt's end
    late = at_the_end[0] + result.evaluated_prompt_tokens
    return figures(result, ended, tail_tokens=late) | {"backlog_ms": backlog_ms}


def figures(result: ChatResult, since: float, tail_tokens: int) -> dict[str, float]:
    return {
        "eos_to_transcript_ms": (time.perf_counter() - since) * 1000,
        "audio_tokens": result.audio_tokens,
        "prompt_tokens": result.prompt_tokens,
        "tail_tokens": tail_tokens,
        "decode_tps": result.tokens_per_second,
        "ttft_ms": result.ttft_ms,
    }


async def rates(eng: Engine) -> float:
    """The model's prefill rate in this run (a text prompt of ~200 tokens; the decode rate is the
    transcripts' own)."""
    words = " ".join(["the kitchen light is on and the hall is dark"] * 20)
    message = [{"role": "user", "content": words}]
    result = await eng.complete(ChatRequest(message, role=ROLE, max_tokens=2, ignore_eos=True))
    return result.evaluated_prompt_tokens / result.ttft_ms * 1000


def token_counts(lib: Path | None, folder: Path) -> dict[str, int]:
    """Audio tokens of 1, 2, 5 and 10 s clips with a library's own preprocessing (the tiny Omni's
    projector: the count depends on the preprocessor, not the model's size)."""
    model = write_text_model(folder / "thinker.gguf", "qwen2vl", chat_template=VL_TEMPLATE)
    mmproj = write_omni_mmproj(folder / "mmproj.gguf")
    clips = [write_speechlike(folder / f"{s}s.wav", s) for s in (1, 2, 5, 10)]
    out = folder / "tokens.npz"
    env = os.environ | ({"MTMD_CPP_LIB": str(lib), "LLAMA_CPP_LIB_PATH": str(lib)} if lib else {})
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mtmd_audio_embed.py"), str(model), str(mmproj), str(out),
         *map(str, clips)], check=True, capture_output=True, env=env,
    )  # fmt: skip
    import numpy as np

    with np.load(out) as found:
        return {f"{c.stem}": int(found[c.name].shape[0]) for c in clips}


def fidelity(folder: Path) -> float | None:
    """The smallest per-token cosine of the fidelity test (None without the torch venv)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
         "tests/engine/test_audio_fidelity.py", f"--basetemp={folder}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("fidelity_cos_min")]
    return float(found[-1]) if proc.returncode == 0 and found else None


async def measure(model: Path, mmproj: Path, lib: Path, *, threads: int, repeat: int, folder: Path) -> dict[str, Any]:
    with library(lib):
        before = engine(spec(ROLE, model, threads, mmproj=str(mmproj), n_ctx=4096), budget_mb=16384)
        await before.load(ROLE)
    after = engine(spec(ROLE, model, threads, mmproj=str(mmproj), n_ctx=4096), budget_mb=16384)
    await after.load(ROLE)
    clips = {s: write_speechlike(folder / f"command-{s}s.wav", float(s)) for s in (2, 5)}
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        for i in range(repeat):  # alternating, so drift hits every path alike
            for s, clip in clips.items():
                runs.setdefault(f"before_{s}s", []).append(await whole(before, clip))
                runs.setdefault(f"whole_{s}s", []).append(await whole(after, clip))
                runs.setdefault(f"streamed_{s}s", []).append(await streamed(after, clip, f"bench-{i}-{s}"))
        hearing = {"before": before.status(ROLE).hearing, "after": after.status(ROLE).hearing}
        prefill_tps = await rates(after)
    finally:
        await before.close()
        await after.close()
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    decode_tps = statistics.median(r["decode_tps"] for name, rs in runs.items() if "before" not in name for r in rs)
    return {"prefill_tps": prefill_tps, "decode_tps": decode_tps, "hearing": hearing, "paths": medians}


def summarize(found: dict[str, Any], counts: dict[str, dict[str, int]], cos: float | None, args: Any) -> dict[str, Any]:
    paths, prefill, decode = found["paths"], found["prefill_tps"], found["decode_tps"]
    out: dict[str, Any] = {"model": args.label, "threads": args.threads, "transcript_tokens": TRANSCRIPT_TOKENS}
    out |= {f"audio_tokens_{k}": v for k, v in counts["after"].items()}
    out |= {f"audio_tokens_{k}_before": v for k, v in counts["before"].items()}
    for s in (2, 5):
        streamed_, whole_, before_ = paths[f"streamed_{s}s"], paths[f"whole_{s}s"], paths[f"before_{s}s"]
        floor = streamed_["tail_tokens"] / prefill * 1000 + TRANSCRIPT_TOKENS / decode * 1000
        out |= {
            f"eos_to_transcript_ms_{s}s": round(streamed_["eos_to_transcript_ms"]),
            f"eos_to_transcript_ms_{s}s_whole": round(whole_["eos_to_transcript_ms"]),
            f"eos_to_transcript_ms_{s}s_before": round(before_["eos_to_transcript_ms"]),
            f"eos_to_transcript_floor_ms_{s}s": round(floor),
            f"speedup_{s}s": round(before_["eos_to_transcript_ms"] / streamed_["eos_to_transcript_ms"], 1),
            f"backlog_ms_{s}s": round(streamed_["backlog_ms"]),
        }
    out |= {
        "prefill_tps": round(prefill, 1),
        "decode_tps": round(decode, 2),
        "hearing": found["hearing"],
        "fidelity_cos_min": cos,
        "machine": machine(args.threads),
    }
    return out


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = ["before (30 s windows, whole)", "2 s windows, whole", "2 s windows, streamed", "floor"]
    for i, s in enumerate((2, 5)):
        values = [summary[f"eos_to_transcript_ms_{s}s_before"], summary[f"eos_to_transcript_ms_{s}s_whole"],
                  summary[f"eos_to_transcript_ms_{s}s"], summary[f"eos_to_transcript_floor_ms_{s}s"]]  # fmt: skip
        xs = [i * 5 + j for j in range(4)]
        ax.bar(xs, [v / 1000 for v in values], color=["#999", "#7ab", "#285", "#cc8"], label=labels if i == 0 else None)
        for x, v in zip(xs, values, strict=True):
            ax.annotate(f"{v / 1000:.1f}", (x, v / 1000), ha="center", va="bottom", fontsize=8)
    ax.set_xticks([1.5, 6.5], ["2 s command", "5 s command"])
    ax.set_ylabel("end of speech -> transcript (s)")
    ax.set_title(f"Hearing on {summary['model']}, {summary['threads']} threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny Omni fixture instead of the 7B shape (a check)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--before-lib", type=Path, help="lib/ of an unpatched llama-cpp-python 0.3.36 build")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    lib = before_lib(args.before_lib)
    with tempfile.TemporaryDirectory(prefix="sarai_bench_audio_") as tmp:
        folder = Path(tmp)
        if args.tiny:
            args.label = "tiny Omni fixture"
            model = write_text_model(folder / "thinker.gguf", "qwen2vl", chat_template=VL_TEMPLATE, seed=5)
            mmproj = write_omni_mmproj(folder / "omni-mmproj.gguf")
        else:
            args.label = "Omni-7B shape"
            seed = seed_models.ensure("omni-7b", args.threads)
            model, mmproj = seed.model, seed.mmproj
        counts = {}
        for name, which in (("before", lib), ("after", None)):
            (folder / name).mkdir()
            counts[name] = token_counts(which, folder / name)
        found = asyncio.run(measure(model, mmproj, lib, threads=args.threads, repeat=args.repeat, folder=folder))
        cos = fidelity(folder / "fidelity")
    name = "bench-audio-tiny" if args.tiny else f"bench-audio-omni7b-t{args.threads}"
    save(args.out, name, summarize(found, counts, cos, args), plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
