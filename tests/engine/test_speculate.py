"""Speculative decoding by prompt lookup: the drafts, the measured on/off rule, and the real worker."""

from __future__ import annotations

import numpy as np
import pytest

from custom_components.sarai_omni.engine import ChatRequest
from custom_components.sarai_omni.engine.worker.llamacpp.decoding import MIN_SAMPLES, PROBE_EVERY, Drafter, lookup
from tests.engine.conftest import EngineFactory
from tests.workers import worker_stats


def ids(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.intc)


def test_the_draft_follows_the_latest_earlier_occurrence_of_the_last_ngram() -> None:
    # ... 6 7 8 -> 1 2 earlier, 6 7 8 -> 3 4 5 later: the later continuation is drafted
    history = ids(6, 7, 8, 1, 2, 9, 6, 7, 8, 3, 4, 5, 0, 6, 7, 8)
    assert lookup(history) == [3, 4, 5, 0, 6]  # MAX_DRAFT tokens
    assert lookup(history, max_draft=2) == [3, 4]


def test_a_longer_match_wins_over_a_later_shorter_one() -> None:
    # "4 6 7 8" occurred once (followed by 1); "6 7 8" alone occurred later (followed by 2)
    assert lookup(ids(4, 6, 7, 8, 1, 0, 6, 7, 8, 2, 0, 4, 6, 7, 8))[:1] == [1]


def test_no_draft_without_a_repeated_trigram() -> None:
    assert lookup(ids(1, 2, 3, 4, 5)) == []
    assert lookup(ids(1, 2, 9, 1, 2)) == []  # a repeated bigram is too weak a hint
    assert lookup(ids(4)) == []


def test_drafting_stops_when_it_measurably_loses_and_is_probed_again() -> None:
    drafter = Drafter()
    for _ in range(MIN_SAMPLES):
        assert drafter.pays()  # still measuring
        drafter.record(0.3, 1, proposed=8, accepted=0)  # a whole batch for one token
        drafter.record(0.1, 1, proposed=0, accepted=0)
    assert not drafter.pays()
    probes = [drafter.pays() for _ in range(6 * PROBE_EVERY)]
    assert probes.count(True) == 2  # probes after PROBE_EVERY steps, then twice as far: losing costs less and less


def test_drafting_stays_on_while_it_wins() -> None:
    drafter = Drafter()
    for _ in range(MIN_SAMPLES):
        drafter.record(0.2, 5, proposed=8, accepted=4)
        drafter.record(0.1, 1, proposed=0, accepted=0)
    steps = [drafter.pays() for _ in range(3 * PROBE_EVERY)]
    assert steps.count(False) == 2  # a plain step now and then (PROBE_EVERY, then 2x), to notice a change
    assert drafter.stats()["accepted"] == 4 * MIN_SAMPLES


def test_plain_steps_are_measured_even_when_every_step_finds_a_draft() -> None:
    """A long standing prompt has a match for almost every bigram: without forced plain steps the
    comparison would never be made and a losing drafter would stay on."""
    drafter = Drafter()
    for _ in range(MIN_SAMPLES):
        assert drafter.pays()
        drafter.record(0.3, 1, proposed=8, accepted=0)
    assert not drafter.pays()  # now plain decoding is measured
    for _ in range(MIN_SAMPLES):
        drafter.record(0.1, 1, proposed=0, accepted=0)
    assert not drafter.pays()  # and it was faster


def test_switched_off_it_never_drafts() -> None:
    assert not Drafter(enabled=False).pays()


@pytest.mark.parametrize("temperature", [0.0])
async def test_the_worker_accepts_drafts_and_the_reply_is_the_plain_one(
    make_engine: EngineFactory, temperature: float
) -> None:
    """A tiny random model falls into loops: its own reply is the prompt it looks up. With drafting the
    worker accepts drafts (fewer forward passes) and writes the same greedy reply as without."""
    replies, stats = [], []
    for prompt_lookup in (False, True):
        engine = make_engine(prompt_lookup=prompt_lookup)
        await engine.start()
        request = ChatRequest(
            messages=[{"role": "user", "content": "the the the the"}],
            temperature=temperature,
            max_tokens=96,
            ignore_eos=True,
        )
        result = await engine.complete(request)
        replies.append(result.text)
        stats.append((await worker_stats(engine, "fast"))["prompt_lookup"])
        await engine.close()
    assert stats[0]["proposed"] == 0
    assert stats[1]["accepted"] > 0, stats[1]
    assert replies[1] == replies[0]
