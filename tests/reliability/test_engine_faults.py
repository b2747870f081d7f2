"""Faults and bad input at the engine: real workers on the tiny models, faults injected for real."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

from PIL import Image
import pytest

from custom_components.sarai_omni.engine import (
    ChatRequest,
    ContextTooSmall,
    DoesNotFitBudget,
    Engine,
    EngineConfig,
    EngineError,
    InvalidInput,
    InvalidModelFile,
    ModelNotFound,
    WorkerCrashed,
    read_gguf,
)
from custom_components.sarai_omni.engine.backends.base import BackendFactory
from custom_components.sarai_omni.engine.backends.llamacpp import llama_cpp_factory
from custom_components.sarai_omni.engine.procmem import alive, rss_bytes
from tests.engine.conftest import ENDLESS, HELLO, USER, EngineFactory
from tests.specs import gguf_spec
from tests.tiny_models import write_mmproj
from tests.workers import worker

from .figures import record

MB = 2**20


def image_message(path: Path, text: str = "what is this?") -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image", "path": str(path)}]}]


def vision_engine(model: Path, mmproj: Path, budget_mb: int, factory: BackendFactory | None = None) -> Engine:
    fast = gguf_spec("fast", str(model), str(mmproj), n_ctx=4096, n_threads=1, pinned=True)
    return Engine(EngineConfig(models=(fast,), ram_budget_mb=budget_mb, backend_factory=factory))


# -- crashes: mid-generation and idle ------------------------------------------------------------------
async def _kill_at_first_token(engine: Engine, request: ChatRequest, sig: int, at: list[float]) -> None:
    async for _ in engine.chat(request):
        if not at:
            at.append(time.perf_counter())
            os.kill(worker(engine).pid or 0, sig)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGILL])
async def test_worker_killed_mid_answer(make_engine: EngineFactory, sig: int) -> None:
    engine = make_engine()
    await engine.load("fast")
    killed_at: list[float] = []
    with pytest.raises(WorkerCrashed, match=signal.Signals(sig).name):
        await _kill_at_first_token(engine, ChatRequest(USER, grammar=ENDLESS, max_tokens=2000), sig, killed_at)
    record("crash_to_error_ms", round((time.perf_counter() - killed_at[0]) * 1000, 1))
    started = time.perf_counter()
    result = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=20))
    record("recovery_ms", round((time.perf_counter() - started) * 1000, 1))  # respawn + load + answer
    assert result.text == "Hello there, friend."


async def test_request_right_after_an_idle_death_respawns(make_engine: EngineFactory) -> None:
    """The death is not read yet (no await in between): the request must not go into the dead pipe."""
    engine = make_engine()
    await engine.load("fast")
    pid = worker(engine).pid or 0
    os.kill(pid, signal.SIGKILL)
    while alive(pid):  # the kernel has made it a zombie; the event loop has not run since
        time.sleep(0.001)  # noqa: ASYNC251  (not yielding to the loop is the point)
    result = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=20))
    assert result.text == "Hello there, friend."
    assert worker(engine).pid != pid


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A 6000 x 6000 PNG: decoding it in a worker takes hundreds of MB."""
    path = tmp_path / "big.png"
    Image.new("RGB", (6000, 6000), (90, 140, 200)).save(path)
    return path


async def tight_budget_mb(model: Path, mmproj: Path) -> int:
    """A budget the vision model fits with 64 MB to spare (from its own estimate)."""
    probe = vision_engine(model, mmproj, budget_mb=0)
    await probe.prepare()
    return probe.needed_mb("fast") + 64


# -- memory --------------------------------------------------------------------------------------------
async def test_watchdog_stops_a_worker_that_outgrows_the_budget(tiny_qwen2: Path, tiny_mmproj: Path, big: Path) -> None:
    """An image far bigger than the HA side ever sends (it bounds them): decoding it in the worker
    would take hundreds of MB; the watchdog ends that worker and the request says why. (Workers
    without a memory cgroup here, so the watchdog is what acts.)"""
    budget_mb = await tight_budget_mb(tiny_qwen2, tiny_mmproj)
    engine = vision_engine(tiny_qwen2, tiny_mmproj, budget_mb=budget_mb, factory=llama_cpp_factory())
    try:
        await engine.load("fast")
        assert worker(engine).cgroup is None
        with pytest.raises(DoesNotFitBudget, match=f"{budget_mb} MB RAM budget"):
            await engine.complete(ChatRequest(image_message(big), max_tokens=4))
        assert engine.status("fast").state == "unloaded"
        after = await engine.complete(ChatRequest(USER, grammar=HELLO, max_tokens=20))  # text works again
        assert after.text == "Hello there, friend."
        record("watchdog_peak_rss_over_budget", round(engine.snapshot().peak_rss_mb / budget_mb, 2))
    finally:
        await engine.close()


# -- bad input -----------------------------------------------------------------------------------------
async def test_lone_surrogate_is_answered(make_engine: EngineFactory) -> None:
    engine = make_engine()
    result = await engine.complete(ChatRequest([{"role": "user", "content": "hi \ud800 there"}], grammar=HELLO))
    assert result.text == "Hello there, friend."


async def test_max_tokens_beyond_the_context_stops_at_it(make_engine: EngineFactory) -> None:
    engine = make_engine(n_ctx=256)
    result = await engine.complete(ChatRequest(USER, grammar=ENDLESS, max_tokens=4096))
    assert result.finish_reason == "length"
    assert 100 < result.completion_tokens < 256
    assert len(result.text) >= result.completion_tokens  # the text is kept


async def test_a_standing_prompt_past_the_context_says_how_large_a_context_it_needs(make_engine: EngineFactory) -> None:
    """What cannot be cut (the system prompt, the last message) is refused with its figures, which
    cross the worker's pipe; the context they suggest then answers the same turn."""
    system = {"role": "system", "content": "Exposed entities: " + ", ".join(f"lamp {i}" for i in range(150))}
    turn = [system, {"role": "user", "content": "Turn on lamp 7."}]
    with pytest.raises(ContextTooSmall) as refused:
        await make_engine(n_ctx=512).complete(ChatRequest(turn, grammar=HELLO, max_tokens=64))
    err = refused.value
    assert (err.role, err.n_ctx, err.answer) == ("fast", 512, 64)
    assert err.tokens > 512 - 64
    assert err.suggested_n_ctx % 1024 == 0
    assert err.suggested_n_ctx >= err.tokens + err.answer
    assert err.placeholders()["suggested"] == str(err.suggested_n_ctx)
    result = await make_engine(n_ctx=err.suggested_n_ctx).complete(ChatRequest(turn, grammar=HELLO, max_tokens=64))
    assert result.text == "Hello there, friend."
    assert result.prompt_tokens == err.tokens


async def test_the_first_token_time_is_split_by_stage(make_engine: EngineFactory) -> None:
    """The prefill stage holds the evaluation: a cold turn's is larger than a warm one's, in
    proportion to what each evaluated; the stages and the host's share come with every result."""
    engine = make_engine()
    system = {"role": "system", "content": " ".join(f"entity {i} is in the kitchen." for i in range(120))}
    cold = await engine.complete(ChatRequest([system, USER[-1]], grammar=HELLO))
    warm = await engine.complete(ChatRequest([system, {"role": "user", "content": "and now?"}], grammar=HELLO))
    assert cold.evaluated_prompt_tokens > 20 * warm.evaluated_prompt_tokens
    assert cold.stages["prefill_ms"] > 5 * warm.stages["prefill_ms"]
    expected = {"prompt_ms", "prefix_ms", "prefill_ms", "first_token_ms", "held_ms", "wait_ms", "pipe_ms"}
    assert set(cold.stages) == expected
    assert set(warm.stages) == expected


async def test_long_prompt_with_an_image_says_which_part_is_too_long(
    tiny_qwen2: Path, tiny_mmproj: Path, jpeg: Path
) -> None:
    engine = vision_engine(tiny_qwen2, tiny_mmproj, budget_mb=2048)
    try:
        with pytest.raises(InvalidInput, match="the prompt alone is"):
            await engine.complete(ChatRequest(image_message(jpeg, "word " * 20000), max_tokens=4))
    finally:
        await engine.close()


async def test_projector_of_another_model_leaves_text_working(tiny_qwen2: Path, tmp_path: Path, jpeg: Path) -> None:
    other = write_mmproj(tmp_path / "other-mmproj.gguf", text_embd=32)  # the tiny model is 64 wide
    engine = vision_engine(tiny_qwen2, other, budget_mb=2048)
    try:
        status = await engine.load("fast")
        assert status.state == "loaded"
        assert "projector" in (status.vision_error or "")
        assert (await engine.complete(ChatRequest(USER, grammar=HELLO))).text == "Hello there, friend."
        with pytest.raises(InvalidInput, match="projector"):
            await engine.complete(ChatRequest(image_message(jpeg), max_tokens=4))
    finally:
        await engine.close()


def test_half_truncated_gguf_is_refused(tiny_qwen2: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    data = tiny_qwen2.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header is intact
    with pytest.raises(InvalidModelFile, match="truncated"):
        read_gguf(cut)


# -- conversation past the context -----------------------------------------------------------------------
async def test_long_conversation_keeps_a_stable_prefix(make_engine: EngineFactory) -> None:
    engine = make_engine(n_ctx=512)
    history: list[dict[str, object]] = [{"role": "system", "content": "You are terse."}]
    shares = []
    for turn in range(40):
        history.append({"role": "user", "content": f"question number {turn} about the garden lights"})
        result = await engine.complete(ChatRequest(list(history), grammar=HELLO, max_tokens=20))
        history.append({"role": "assistant", "content": result.text})
        if result.dropped_messages:
            shares.append(result.evaluated_prompt_tokens / result.prompt_tokens)
    assert len(shares) >= 10  # the history did outgrow the context
    mean = sum(shares) / len(shares)
    record("overflow_reevaluated_share", round(mean, 2))
    assert mean < 0.5  # one message dropped per turn re-evaluated ~0.9 of the prompt every turn


# -- the state folder: unwritable, full, litter ------------------------------------------------------------
async def test_state_dir_that_is_not_a_folder(tiny_qwen2: Path, tiny_mmproj: Path, tmp_path: Path, jpeg: Path) -> None:
    """Nothing can be written under it (here: a file stands where the folder should be)."""
    state = tmp_path / "state"
    state.write_text("not a folder")
    fast = gguf_spec(
        "fast", str(tiny_qwen2), str(tiny_mmproj), n_threads=1, pinned=True, kv_cache_dir=str(state / "kv")
    )
    engine = Engine(EngineConfig(models=(fast,), ram_budget_mb=2048, state_dir=str(state)))
    try:
        await engine.start([{"role": "system", "content": "standing prompt"}])
        assert engine.status("fast").state == "loaded"
        await engine.warm("fast", [{"role": "system", "content": "another standing prompt"}])
        assert (await engine.complete(ChatRequest(image_message(jpeg), max_tokens=4))).finish_reason
        assert (await engine.complete(ChatRequest(USER, grammar=HELLO))).text == "Hello there, friend."
    finally:
        await engine.close()


READ_ONLY_AND_FULL = """
import asyncio, os, subprocess, sys
from pathlib import Path
from custom_components.sarai_omni.engine import ChatRequest, Engine, EngineConfig
from tests.specs import gguf_spec
ro, full, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
try:
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(ro)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], check=True)
except (OSError, subprocess.CalledProcessError):
    sys.exit(77)  # no mounts allowed in this namespace: the test is skipped
async def main(state):
    spec = gguf_spec("fast", model, n_threads=1, pinned=True, kv_cache_dir=str(state / "kv"))
    engine = Engine(EngineConfig(models=(spec,), ram_budget_mb=2048, state_dir=str(state)))
    await engine.start([{"role": "system", "content": "standing prompt " * 50}])
    result = await engine.complete(ChatRequest([{"role": "user", "content": "hi"}], grammar='root ::= "ok"'))
    await engine.close()
    assert result.text == "ok", result
for state in (ro, full):
    asyncio.run(main(state))
left = [p.name for p in full.rglob("*") if p.suffix == ".tmp"]
assert not left, left
print("OK")
"""


def test_read_only_and_full_state_dir(tiny_qwen2: Path, tmp_path: Path) -> None:
    """Real read-only and full filesystems: tmpfs mounts in a private mount namespace."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], check=False).returncode:
        pytest.skip("no private mount namespaces here (unshare -m refused)")
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir()
    full.mkdir()
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", READ_ONLY_AND_FULL, str(ro), str(full), str(tiny_qwen2)],
        capture_output=True, text=True, cwd=root, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    if run.returncode == 77:
        pytest.skip("mounting a tmpfs is not allowed here")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("OK")


async def test_crash_during_an_image_leaves_no_litter(
    tiny_qwen2: Path, tiny_mmproj: Path, tmp_path: Path, jpeg: Path
) -> None:
    kv = tmp_path / "kv"
    kv.mkdir()
    foreign = [kv / f"state-0therm0del00-{i}.kv" for i in range(12)]  # another model's snapshots
    for path in foreign:
        path.write_bytes(b"x")
    fast = gguf_spec("fast", str(tiny_qwen2), str(tiny_mmproj), n_threads=1, pinned=True, kv_cache_dir=str(kv))
    engine = Engine(EngineConfig(models=(fast,), ram_budget_mb=2048, state_dir=str(tmp_path)))
    try:
        await engine.start([{"role": "system", "content": "standing prompt"}])
        await engine.complete(ChatRequest(USER, grammar=HELLO))  # a text cache worth parking
        with pytest.raises(WorkerCrashed):  # killed while the text cache is parked
            await _kill_at_first_token(
                engine, ChatRequest(image_message(jpeg), grammar=ENDLESS, max_tokens=500), signal.SIGKILL, []
            )
        assert list(kv.glob("parked-*.kv"))  # the dead worker's one parked file
        await engine.load("fast")  # the next worker removes it
        for i in range(10):
            await engine.warm("fast", [{"role": "system", "content": f"prompt {i}"}])
        assert not list(kv.glob("parked-*.kv"))
        assert not list(kv.glob("tmp*"))
        assert all(p.exists() for p in foreign)  # pruning keeps only 8 of its own, never others'
        assert len(list(kv.glob("state-*.kv"))) == len(foreign) + 8
    finally:
        await engine.close()


async def test_model_file_deleted_and_truncated_while_loaded(
    make_engine: EngineFactory, tiny_qwen2: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model.gguf"
    shutil.copy(tiny_qwen2, copy)
    engine = Engine(EngineConfig(models=(gguf_spec("fast", str(copy), n_threads=1, pinned=True),), ram_budget_mb=2048))
    try:
        await engine.load("fast")
        copy.unlink()  # the loaded model runs on from its mapping
        assert (await engine.complete(ChatRequest(USER, grammar=HELLO))).text == "Hello there, friend."
        await engine.unload("fast")
        with pytest.raises(ModelNotFound):
            await engine.load("fast")
        shutil.copy(tiny_qwen2, copy)
        await engine.load("fast")
        with copy.open("r+b") as fh:  # cut under the running worker: its mapping loses the pages
            fh.truncate(copy.stat().st_size // 2)
        with pytest.raises(EngineError):  # the weights are read on every token: the worker faults (SIGBUS)
            await _three_answers(engine)
        await engine.unload("fast")
        with pytest.raises(EngineError, match=r"truncated|not a readable|could not load"):
            await engine.load("fast")
    finally:
        await engine.close()


async def _three_answers(engine: Engine) -> None:
    for _ in range(3):
        await engine.complete(ChatRequest(USER, grammar=ENDLESS, max_tokens=50))


# -- soak ------------------------------------------------------------------------------------------------
async def test_soak(make_engine: EngineFactory) -> None:
    """SARAI_SOAK_TURNS turns (100 in scripts/test, 1,000 in scripts/reliability): memory and fds flat."""
    turns = int(os.environ.get("SARAI_SOAK_TURNS", "100"))
    engine = make_engine()
    history = [{"role": "system", "content": "You are terse."}]
    base_rss = base_fds = 0
    for turn in range(turns):
        messages = [*history, {"role": "user", "content": f"turn {turn % 7}"}]
        await engine.complete(ChatRequest(messages, grammar=HELLO, max_tokens=20))
        if turn == 10:  # after warm-up: allocator arenas and caches have settled
            pid = worker(engine).pid or 0
            base_rss, base_fds = rss_bytes(pid) or 0, len(os.listdir(f"/proc/{pid}/fd"))
    pid = worker(engine).pid or 0
    growth = (rss_bytes(pid) or 0) / base_rss - 1
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    record("soak_turns", turns)
    record("soak_rss_growth_pct", round(100 * growth, 2))
    record("soak_fds", f"{base_fds} -> {fds}")
    assert growth < 0.05
    assert abs(fds - base_fds) <= 1


async def test_kernel_limit_ends_a_runaway_between_two_samples(
    tiny_qwen2: Path, tiny_mmproj: Path, tmp_path: Path, big: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the watchdog asleep, the worker's memory cgroup (where the kernel offers one) ends it."""
    from custom_components.sarai_omni.engine import cgroup
    from custom_components.sarai_omni.engine.pool import watchdog

    if await asyncio.to_thread(cgroup.memory_parent) is None:
        pytest.skip("this kernel gives this process no memory cgroup to delegate")
    monkeypatch.setattr(watchdog, "WATCH_INTERVAL_S", 3600.0)
    parent, _ = cgroup.memory_parent() or (tmp_path, "")
    orphan = parent / "sarai_omni-999999999-fast-1"  # left by an HA process that died
    orphan.mkdir()
    budget_mb = await tight_budget_mb(tiny_qwen2, tiny_mmproj)
    engine = vision_engine(tiny_qwen2, tiny_mmproj, budget_mb=budget_mb)
    try:
        await engine.load("fast")
        if worker(engine).cgroup is None:  # the hierarchy looked writable but refused the worker
            orphan.rmdir()
            pytest.skip("this kernel refused a memory cgroup for the worker")
        assert not orphan.exists()
        with pytest.raises(DoesNotFitBudget):
            await engine.complete(ChatRequest(image_message(big), max_tokens=4))
        assert worker(engine).out_of_memory
        assert (await engine.complete(ChatRequest(USER, grammar=HELLO))).text == "Hello there, friend."
    finally:
        await engine.close()
