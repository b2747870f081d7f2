"""Per-machine load-parameter calibration (weight repacking), with real workers."""

from __future__ import annotations

import json
from pathlib import Path

from custom_components.sarai_omni.engine import Engine, EngineConfig, ModelSpec
from custom_components.sarai_omni.engine.calibrate import Measurement, choose_repack
from custom_components.sarai_omni.engine.pool import MB, estimate_bytes

PLAIN = Measurement(False, 2_900 * MB, 26.0, 8.34)


def test_repack_only_when_it_pays() -> None:
    assert not choose_repack(PLAIN, Measurement(True, 4_640 * MB, 24.3, 7.87))  # the EPYC measurement
    assert choose_repack(PLAIN, Measurement(True, 4_640 * MB, 26.0, 9.5))  # decode +14%
    assert choose_repack(PLAIN, Measurement(True, 4_640 * MB, 40.0, 8.3))  # prefill +54%
    assert not choose_repack(PLAIN, None)  # repacked did not fit: never chosen


def engine(model: Path, state_dir: Path, budget_mb: int = 4096) -> Engine:
    spec = ModelSpec("fast", str(model), n_ctx=1024, n_threads=2, pinned=True)
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
    assert plain.rss > 0
    assert plain.decode_tps > 0

    again = engine(tiny_qwen2, tmp_path)  # a restart (of HA) on the same machine: no new measurement
    await again.start()
    assert again.pool.calibrations_run == 0
    assert again.snapshot()["models"]["fast"]["repack"] == record["repack"]
    await again.close()


async def test_repacking_is_not_measured_when_it_cannot_fit(gemma: Path, tmp_path: Path) -> None:
    probe = engine(gemma, tmp_path)
    await probe.pool.prepare()
    slot = probe.pool.slot("fast")
    assert slot.info is not None
    plain_mb = estimate_bytes(slot.info, slot.spec) // MB
    tight = engine(gemma, tmp_path / "tight", budget_mb=plain_mb + 50)  # room for one copy of the weights only
    await tight.start()
    [record] = json.loads((tmp_path / "tight" / "calibration.json").read_text()).values()
    assert set(record["measured"]) == {"False"}
    assert record["repack"] is False
    assert tight.pool.measured_rss() <= tight.pool.budget
    await tight.close()
