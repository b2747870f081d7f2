"""The worker's decode loop, with speculative decoding by prompt lookup.

Assist replies repeat what the prompt holds: entity names, areas, states, the user's own words. A
prompt-lookup draft takes the tokens that followed the latest earlier occurrence of the last few
tokens and the model checks them all in one batch: each draft token it would have sampled itself is
kept, the first one it would not have sampled is replaced by its own choice, so the text is exactly
what plain decoding gives (same sampler, same grammar) and only the number of forward passes falls.

A batch of k+1 tokens costs more than one token, so drafting pays only when enough drafts are
accepted, which depends on the machine and the text. The `Drafter` therefore measures both ways as
it goes (seconds per emitted token of drafted and of plain steps) and drafts only while drafted
steps are the faster ones, probing again now and then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
import time
from typing import Any

import numpy as np

from . import adapter

MIN_NGRAM, MAX_NGRAM = 3, 5  # shorter matches are accepted too rarely to pay for their batch
MAX_DRAFT = 5  # a rejected draft costs its whole batch: on a 2-core CPU 9 tokens cost ~3 decode steps
PROBE_EVERY = 32  # steps: the other way is tried this often, doubling while the choice holds ...
MAX_PROBE_EVERY = 1024  # ... up to this
MIN_SAMPLES = 3  # steps of each way measured before the comparison is trusted


def lookup(history: np.ndarray[Any, Any], max_draft: int = MAX_DRAFT) -> list[int]:
    """The tokens after the latest earlier occurrence of the history's last n-gram (longest first)."""
    size = len(history)
    for n in range(min(MAX_NGRAM, size - 1), MIN_NGRAM - 1, -1):
        windows = np.lib.stride_tricks.sliding_window_view(history[:-1], n)
        hits = np.flatnonzero((windows == history[-n:]).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return [int(t) for t in history[start : start + max_draft]]
    return []


@dataclass(slots=True)
class _Rate:
    """Seconds per emitted token, a moving average (recent steps weigh most: the text changes)."""

    per_token: float = 0.0
    steps: int = 0

    def add(self, seconds: float, tokens: int) -> None:
        value = seconds / max(tokens, 1)
        self.per_token = value if not self.steps else self.per_token + WEIGHT * (value - self.per_token)
        self.steps += 1


WEIGHT = 0.25


@dataclass(slots=True)
class Drafter:
    """Prompt-lookup drafts, kept only while they measurably pay (per worker, across requests)."""

    enabled: bool = True
    drafted: _Rate = field(default_factory=_Rate)
    plain: _Rate = field(default_factory=_Rate)
    accepted: int = 0
    proposed: int = 0
    _since_probe: int = 0
    _probe_every: int = PROBE_EVERY
    _last_choice: bool = True

    def pays(self) -> bool:
        """Draft this step? Both ways are measured first; then the faster one, and every
        PROBE_EVERY steps the other one once, so a change in the text is seen."""
        if not self.enabled:
            return False
        if self.drafted.steps < MIN_SAMPLES:
            return True
        if self.plain.steps < MIN_SAMPLES:
            return False
        wins = self.drafted.per_token < self.plain.per_token
        if wins != self._last_choice:  # the choice changed: look again soon
            self._last_choice, self._probe_every, self._since_probe = wins, PROBE_EVERY, 0
        self._since_probe += 1
        if self._since_probe >= self._probe_every:  # the other way once; the same answer: ask less often
            self._since_probe, self._probe_every = 0, min(2 * self._probe_every, MAX_PROBE_EVERY)
            return not wins
        return wins

    def record(self, seconds: float, emitted: int, proposed: int, accepted: int) -> None:
        (self.drafted if proposed else self.plain).add(seconds, emitted)
        self.proposed, self.accepted = self.proposed + proposed, self.accepted + accepted

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "proposed": self.proposed,
            "accepted": self.accepted,
            "drafted_ms_per_token": round(self.drafted.per_token * 1000, 2),
            "plain_ms_per_token": round(self.plain.per_token * 1000, 2),
        }


def decode(llm: Any, tokens: list[int], sampler: Any, drafter: Drafter) -> Iterator[int]:
    """Evaluate `tokens` after the context's cached prefix, then yield sampled tokens for ever.

    `llm` is a llama-cpp-python `Llama` whose context already holds the prefix (`n_tokens`);
    `sampler` is its LlamaSampler (sampling and grammar state, accepting each token it samples).
    """
    if tokens:
        llm.eval(tokens)
    token = adapter.sample(sampler, llm, -1)
    while True:
        yield token
        n_past = llm.n_tokens
        room = llm.n_ctx() - n_past - 1
        draft = lookup(np.append(llm.input_ids[:n_past], token), min(MAX_DRAFT, room)) if drafter.pays() else []
        started = time.perf_counter()
        adapter.decode_batch(llm, [token, *draft], n_past)
        llm.input_ids[n_past : n_past + len(draft) + 1] = [token, *draft]  # what the context holds now
        llm.n_tokens = n_past + len(draft) + 1
        accepted = 0
        for i in range(len(draft) + 1):
            token = adapter.sample(sampler, llm, i)
            if i == len(draft) or token != draft[i]:
                break
            accepted += 1
            yield token
        drafter.record(time.perf_counter() - started, accepted + 1, len(draft), accepted)
        keep = n_past + 1 + accepted  # the fed token and the accepted drafts; the rest is dropped
        if keep < llm.n_tokens:
            adapter.keep_prefix(llm, keep)
            llm.n_tokens = keep
