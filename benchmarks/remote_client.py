"""The remote backend's own HTTP code (aiohttp) against the `openai` package, side by side in one run.

    python -m benchmarks.remote_client [--out docs/benchmarks] [--requests 20]   (last line: JSON)

HA core's `llama_cpp` and `openai_conversation` integrations talk to servers through `openai`. This
measures whether it would serve this project better, against the project-built llama-server on
127.0.0.1 (the real gemma 270M, 1 thread, 32 tokens per answer, `ignore_eos`):
- what each client adds to an answer: its wall time minus the server's own (`timings`: prompt and
  decode), requests of the two alternated, the same prompt (the server's cache holds it for both);
- what importing `openai` costs a Home Assistant process (seconds, RSS), and its size on disk;
- whether llama.cpp's extensions pass through each (a GBNF `grammar` in, `timings` out);
- the lines of remote/ that an `openai` client would replace (HTTP post, SSE parsing, the plain-JSON
  answer): the rest (messages, native tool calls to Qwen text, failover, 503 waits, error mapping,
  the json_schema fallback) stays either way.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import save
from custom_components.sarai_omni.engine.backends.base import ChatRequest, Generated
from custom_components.sarai_omni.engine.backends.remote import RemoteBackend
from custom_components.sarai_omni.engine.spec import RemoteModel
from tests.conftest import GEMMA
from tests.openai_server import LlamaServer
from tests.specs import remote_spec

ROOT = Path(__file__).resolve().parent.parent
REMOTE = ROOT / "custom_components" / "sarai_omni" / "engine" / "backends" / "remote"
GRAMMAR = 'root ::= "Paris is the capital of France."'
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 32
REPLACED = ("_post", "_deltas", "_read_json")  # what an openai client does instead


def server_ms(timings: dict[str, Any]) -> float:
    return float(timings.get("prompt_ms", 0.0)) + float(timings.get("predicted_ms", 0.0))


async def ours(backend: RemoteBackend) -> tuple[float, float, str]:
    started = time.perf_counter()
    text, done = "", None
    async for piece in backend.generate(ChatRequest(MESSAGES, max_tokens=TOKENS, ignore_eos=True, temperature=0)):
        if isinstance(piece, Generated):
            done = piece
        else:
            text += piece
    wall = (time.perf_counter() - started) * 1000
    assert done is not None
    timings = backend.last_timings
    return wall, server_ms(timings), text


async def theirs(client: Any) -> tuple[float, float, str]:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="gemma", messages=MESSAGES, max_tokens=TOKENS, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    text, timings = "", dict[str, Any]()
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        timings = (chunk.model_extra or {}).get("timings") or timings
    return (time.perf_counter() - started) * 1000, server_ms(timings), text


async def extensions(backend: RemoteBackend, client: Any) -> dict[str, bool]:
    """A grammar in and timings out, through each."""
    mine = "".join(
        [
            p
            async for p in backend.generate(ChatRequest(MESSAGES, grammar=GRAMMAR, max_tokens=TOKENS))
            if isinstance(p, str)
        ]
    )
    answer = await client.chat.completions.create(
        model="gemma", messages=MESSAGES, max_tokens=TOKENS, extra_body={"grammar": GRAMMAR}
    )
    return {
        "grammar_ours": mine == "Paris is the capital of France.",
        "grammar_openai": answer.choices[0].message.content == "Paris is the capital of France.",
        "timings_ours": bool(backend.last_timings),
        "timings_openai": bool((answer.model_extra or {}).get("timings")),
    }


async def overhead(url: str, requests: int) -> dict[str, Any]:
    import openai

    backend = RemoteBackend(remote_spec("fast", model=RemoteModel(url, "gemma")))
    await backend.load(remote_spec("fast", model=backend.remote))
    client = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)
    added: dict[str, list[float]] = {"ours": [], "openai": []}
    walls: dict[str, list[float]] = {"ours": [], "openai": []}
    try:
        await ours(backend)  # warm: the server's prompt cache, the connections
        await theirs(client)
        for _ in range(requests):
            for name in ("ours", "openai"):
                wall, server, text = await (ours(backend) if name == "ours" else theirs(client))
                assert text, f"{name}: no answer"
                walls[name].append(wall)
                added[name].append(wall - server)
        passes = await extensions(backend, client)
    finally:
        await backend.close()
        await client.close()
    return {
        "client_added_ms": {k: _stats(v) for k, v in added.items()},
        "wall_ms": {k: _stats(v) for k, v in walls.items()},
        "extensions": passes,
    }


def import_cost(module: str, runs: int = 5) -> dict[str, float]:
    """Seconds and RSS MiB that importing `module` adds to a fresh interpreter (median of `runs`)."""
    probe = (
        "import time,re\n"
        "def rss(): return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))/1024\n"
        f"import aiohttp, pydantic, httpx\nr=rss(); t=time.perf_counter(); import {module}\n"
        "print(time.perf_counter()-t, rss()-r)"
    )  # HA has aiohttp, pydantic and httpx loaded already: only what `module` adds counts
    seconds, mib = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
        s, m = out.stdout.split()
        seconds.append(float(s))
        mib.append(float(m))
    return {"seconds": round(statistics.median(seconds), 3), "rss_mib": round(statistics.median(mib), 1)}


def replaced_lines() -> dict[str, int]:
    """Code lines (no blanks, comments or docstrings) of remote/, and of the methods openai would replace."""
    total, replaced = 0, 0
    for path in sorted(REMOTE.glob("*.py")):
        source = path.read_text()
        lines = _code_lines(source)
        total += len(lines)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name in REPLACED:
                replaced += len([n for n in lines if node.lineno <= n <= (node.end_lineno or node.lineno)])
    return {"remote_code_lines": total, "replaceable_code_lines": replaced}


def _code_lines(source: str) -> set[int]:
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            docstrings |= set(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return {
        i for i, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and i not in docstrings
    }  # fmt: skip


def package_mib(name: str) -> float:
    import importlib.util

    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.origin is not None
    folder = Path(spec.origin).parent
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    added = result["client_added_ms"]
    left.bar(list(added), [added[k]["median"] for k in added], color=["#4a90d9", "#d98f4a"])
    left.set_ylabel("ms a client adds to an answer (median)")
    left.set_title(f"over the server's own {result['server_ms_median']:.0f} ms ({TOKENS} tokens)")
    cost = result["import_openai"]
    right.bar(
        ["import (10 ms)", "RSS (MiB)", "on disk (MiB)"], [cost["seconds"] * 100, cost["rss_mib"], result["openai_mib"]]
    )
    right.set_title("what `openai` adds to Home Assistant")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = LlamaServer(Path(folder), GEMMA, "gemma").start()
        try:
            result = asyncio.run(overhead(server.url, args.requests))
        finally:
            server.stop()
    result["server_ms_median"] = round(
        result["wall_ms"]["ours"]["median"] - result["client_added_ms"]["ours"]["median"], 1
    )
    result["import_openai"] = import_cost("openai")
    result["openai_mib"] = package_mib("openai")
    result |= replaced_lines()
    save(args.out, "remote-client", result, plot)


if __name__ == "__main__":
    main()
