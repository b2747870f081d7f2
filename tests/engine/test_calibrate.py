"""Per-machine load-parameter calibration (weight repacking), with real workers."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
import signal
from typing import Any

import pytest

from custom_components.sarai_omni.engine import MB, ChatRequest, Engine, EngineConfig, WorkerCrashed, estimate_bytes
from custom_components.sarai_omni.engine.pool.calibration import (
    CalibrationStore,
    Measurement,
    calibration_key,
    choose_flash_attn,
    choose_repack,
    make_record,
)
from custom_components.sarai_omni.engine.protocol import FAULTS_ENV
from tests.specs import gguf_spec
from tests.workers import worker

from .conftest import HELLO, USER

PLAIN = Measurement(False, 2_900 * MB, 26.0, 8.34)


def test_repack_only_when_it_pays() -> None:
    assert not choose_repack(PLAIN, Measurement(True, 4_640 * MB, 24.3, 7.87))  # the EPYC measurement
    assert choose_repack(PLAIN, Measurement(True, 4_640 * MB, 26.0, 9.5))  # decode +14%
    assert choose_repack(PLAIN, Measurement(True, 4_640 * MB, 40.0, 8.3))  # prefill +54%
    assert not choose_repack(PLAIN, None)  # repacked did not fit: never chosen


def test_flash_attention_only_when_it_pays() -> None:
    assert not choose_flash_attn(PLAIN, None)  # not measured: never chosen
    assert choose_flash_attn(PLAIN, Measurement(False, PLAIN.rss, 28.0, 8.30, flash_attn=True))  # prefill +8 %
    assert choose_flash_attn(PLAIN, Measurement(False, PLAIN.rss, 25.7, 8.90, flash_attn=True))  # decode +7 %
    assert not choose_flash_attn(PLAIN, Measurement(False, PLAIN.rss, 28.0, 8.00, flash_attn=True))  # decode -4 %
    assert not choose_flash_attn(PLAIN, Measurement(False, PLAIN.rss, 26.5, 8.40, flash_attn=True))  # noise


def engine(model: Path, state_dir: Path, budget_mb: int = 4096) -> Engine:
    spec = gguf_spec("fast", str(model), n_ctx=1024, n_threads=2, pinned=True)
    return Engine(EngineConfig(models=(spec,), ram_budget_mb=budget_mb, state_dir=str(state_dir)))


async def test_first_load_measures_both_ways_and_remembers(tiny_qwen2: Path, tmp_path: Path) -> None:
    first = engine(tiny_qwen2, tmp_path)
    await first.start()
    await first.close()
    assert first.pool.calibrations_run == 1
    [record] = json.loads((tmp_path / "calibration.json").read_text()).values()
    assert set(record["measured"]) == {"False", "True"}
    plain, repacked = (Measurement(**record["measured"][k]) for k in ("False", "True"))
    assert record["repack"] == choose_repack(plain, repacked)
    flash = Measurement(**record["flash_attn_measured"])  # the chosen way, with flash attention
    assert flash.flash_attn
    assert flash.repack == record["repack"]
    assert record["flash_attn"] == choose_flash_attn(repacked if record["repack"] else plain, flash)
    assert plain.rss > 0
    assert plain.decode_tps > 0

    again = engine(tiny_qwen2, tmp_path)  # a restart (of HA) on the same machine: no new measurement
    await again.start()
    assert again.pool.calibrations_run == 0
    assert again.status("fast").repack == record["repack"]
    assert again.status("fast").flash_attn == record["flash_attn"]
    await again.close()


async def test_repacking_is_not_measured_when_it_cannot_fit(gemma: Path, tmp_path: Path) -> None:
    probe = engine(gemma, tmp_path)
    await probe.pool.prepare()
    slot = probe.pool.slot("fast")
    plain_mb = estimate_bytes(slot.spec, slot.files) // MB
    tight = engine(gemma, tmp_path / "tight", budget_mb=plain_mb + 50)  # room for one copy of the weights only
    await tight.start()
    [record] = json.loads((tmp_path / "tight" / "calibration.json").read_text()).values()
    assert set(record["measured"]) == {"False"}
    assert record["repack"] is False
    assert tight.pool.watchdog.measured_rss() <= tight.pool.budget
    await tight.close()


def record_of(state_dir: Path) -> dict[str, Any]:
    [record] = json.loads((state_dir / "calibration.json").read_text()).values()
    return record  # type: ignore[no-any-return]


@pytest.mark.parametrize("sig", ["SIGILL", "SIGSEGV"])
async def test_a_repacked_trial_that_dies_is_ruled_out_and_the_model_loads_plain(
    tiny_qwen2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: str
) -> None:
    """What AMX CPUs whose AMX traps do to llama.cpp's repacking, injected on any CPU."""
    monkeypatch.setenv(FAULTS_ENV, f"repack={sig}")
    first = engine(tiny_qwen2, tmp_path)
    await first.start()
    result = await first.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))
    assert result.text == "Hello there, friend."
    status = first.snapshot().models["fast"]
    assert status.repack is False
    assert status.unusable_variants["repack"].startswith(f"{sig}: ")
    assert first.pool.backend_problem() is None  # the safe way runs: nothing to repair
    assert worker(first).crashes == 0  # a trial's death is not the model's crash
    await first.close()
    record = record_of(tmp_path)
    assert record["repack"] is False
    assert set(record["measured"]) == {"False"}
    assert record["unusable"]["repack"].startswith(f"{sig}: ")

    again = engine(tiny_qwen2, tmp_path)  # after a restart: remembered, not tried again
    await again.start()
    assert again.pool.calibrations_run == 0
    assert again.status("fast").unusable_variants == record["unusable"]
    await again.close()


async def test_when_the_safe_way_dies_too_the_backend_is_unusable(
    tiny_qwen2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULTS_ENV, "plain=SIGSEGV")
    broken = engine(tiny_qwen2, tmp_path)
    with pytest.raises(WorkerCrashed, match="SIGSEGV: segmentation fault"):
        await broken.start()
    assert "without weight repacking" in (broken.pool.backend_problem() or "")
    assert broken.status("fast").state == "error"
    assert not (tmp_path / "calibration.json").exists()  # nothing learnt: a fixed install calibrates anew
    await broken.close()


def seed_repack_decision(model: Path, state_dir: Path) -> None:
    """A calibration that found repacking faster on this machine (as on some AVX-512 CPUs)."""
    plain, repacked = Measurement(False, 40 * MB, 26.0, 8.3), Measurement(True, 60 * MB, 40.0, 9.5)
    record = make_record(model.name, plain, repacked, {})
    CalibrationStore(str(state_dir)).put(calibration_key(str(model), 2), record)


async def test_a_repacked_load_that_dies_falls_back_to_the_safe_way(
    tiny_qwen2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_repack_decision(tiny_qwen2, tmp_path)
    monkeypatch.setenv(FAULTS_ENV, "repack=SIGILL")
    eng = engine(tiny_qwen2, tmp_path)
    await eng.start()
    assert (await eng.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))).text == "Hello there, friend."
    assert eng.status("fast").repack is False
    assert eng.pool.backend_problem() is None
    await eng.close()
    record = record_of(tmp_path)
    assert record["repack"] is False
    assert record["unusable"]["repack"].startswith("SIGILL: ")


async def test_a_repacked_worker_dying_later_rules_repacking_out(tiny_qwen2: Path, tmp_path: Path) -> None:
    seed_repack_decision(tiny_qwen2, tmp_path)
    eng = engine(tiny_qwen2, tmp_path)
    await eng.start()
    client = worker(eng)
    assert eng.status("fast").repack is True
    assert client.pid is not None
    crashed = asyncio.Event()
    eng.add_listener(lambda: crashed.set() if client.crashes else None)
    os.kill(client.pid, signal.SIGSEGV)
    async with asyncio.timeout(30):
        await crashed.wait()
    assert eng.pool.backend_problem() is None
    assert (await eng.complete(ChatRequest(messages=USER, grammar=HELLO, temperature=0))).text == "Hello there, friend."
    assert eng.status("fast").repack is False  # the reload went the safe way
    await eng.close()
    assert record_of(tmp_path)["unusable"]["repack"].startswith("SIGSEGV: ")
