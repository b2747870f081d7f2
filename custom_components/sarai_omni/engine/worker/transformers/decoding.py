"""How the thinker's tokens come out: streamed as text with stop strings and cancel (transformers'
streamer and stopping-criteria interfaces), or forced to a given text for the talker to say."""

from __future__ import annotations

import time
from typing import Any

from ... import protocol
from ...prompts import StopMatcher


class Stream:
    """transformers' streamer interface: decoded text out as it forms, stop strings, cancel."""

    def __init__(self, runner: Any, rid: int, stops: list[str], started: float) -> None:
        self._runner, self._rid, self._started = runner, rid, started
        self._matcher = StopMatcher([*stops, "<|im_end|>"])
        self._ids: list[int] = []
        self._sent = ""
        self._prompt_seen = False
        self.first_at = self.last_at = 0.0
        self.reason = ""

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() hands the prompt over first
            self._prompt_seen = True
            return
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.last_at = now
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._runner._tok.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        self._emit(self._matcher.feed(text[len(self._sent) :]))
        self._sent = text

    def end(self) -> None:
        self._emit(self._matcher.flush())

    def _emit(self, text: str) -> None:
        if text:
            self._runner._send({"id": self._rid, "event": protocol.EV_TOKEN, "text": text})

    def should_stop(self, input_ids: Any, scores: Any, **_: Any) -> bool:
        if self._matcher.stopped:
            self.reason = "stop"
        elif self._runner.requests.is_cancelled(self._rid):
            self.reason = "cancelled"
        return bool(self.reason)

    def finish(self, max_tokens: int) -> dict[str, Any]:
        n = len(self._ids)
        ended = bool(self._ids) and self._ids[-1] in set(self._runner._eos_ids())  # the model ended its turn
        reason = self.reason or ("length" if n >= max_tokens and not ended else "stop")
        completion = n - int(ended)
        decode_s = self.last_at - self.first_at
        return {
            "finish_reason": reason,
            "completion_tokens": completion,
            "ttft_ms": ((self.first_at or time.perf_counter()) - self._started) * 1000,
            "tokens_per_second": (n - 1) / decode_s if n > 1 and decode_s > 0 else 0.0,
        }


class Force:
    """A logits processor that makes the thinker say exactly `target` (then end its turn)."""

    def __init__(self, target: list[int], prompt_len: int) -> None:
        self._target, self._prompt_len = target, prompt_len

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        step = min(int(input_ids.shape[1]) - self._prompt_len, len(self._target) - 1)
        forced = scores.new_full(scores.shape, float("-inf"))
        forced[:, self._target[step]] = 0.0
        return forced


class CancelWatch:
    """Stops a generation (the talker's too) once its request is cancelled."""

    def __init__(self, runner: Any, rid: int) -> None:
        self._runner, self._rid, self.hit = runner, rid, False

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> bool:
        self.hit = self.hit or self._runner.requests.is_cancelled(self._rid)
        return self.hit
