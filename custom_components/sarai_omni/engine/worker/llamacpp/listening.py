"""Speech taken while it is spoken (worker-only): each completed 2 s window of the speaker's audio is
encoded and prefilled into the KV cache at once, so at the end of speech only the tail window, the
prompt's closing text and the transcript remain.

With Qwen2.5-Omni's faithful windows (engine/patches/) a window is encoded on its own, as
transformers encodes it inside a whole clip: the prompt is the one `Vision.evaluate` would build
(text before the clip, <|audio_bos|>, the windows' tokens, <|audio_eos|>, text after), evaluated in
pieces. A session lives in the worker until its transcript is generated, another request uses the
model, or the engine ends it; then the context is cleared (the text cache is warmed again as usual).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
import ctypes
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidInput
from . import adapter
from .media import NO_HEARING, NOT_A_TOKEN, Vision

RATE = 16000  # the pipeline's PCM: 16 kHz, 16-bit, mono (what Omni's encoder takes)
MIN_SAMPLES = 3 * 160  # a window under 3 mel frames pools to no token: left out, as transformers does
LOST = "the listening session is gone (another request used the model, or it restarted)"


@dataclass
class Session:
    """One utterance being heard."""

    name: str
    suffix: list[int]  # <|audio_eos|> and the prompt after the clip, evaluated before the transcript
    stops: tuple[str, ...]
    prompt_format: str
    prompt_tokens: int = 0
    audio_tokens: int = 0
    audio_seconds: float = 0.0


class Listening:
    """The worker's one listening session, over its model's projector."""

    def __init__(self) -> None:
        self.session: Session | None = None

    def start(self, llm: Any, vision: Vision, name: str, rendered: Any) -> Session:
        """Clear the context and evaluate the prompt up to the clip (its <|audio_bos|> included).
        `rendered`: the prompt with one media marker where the clip goes."""
        if not vision.has_audio:
            raise InvalidInput(NO_HEARING)
        prefix, marker, suffix = rendered.text.partition(vision.marker)
        if not marker:
            raise InvalidInput("a listening prompt needs one audio part")
        begin, end = vision.audio_markers
        llm.reset()
        adapter.clear_kv(llm)
        head = llm.tokenize(prefix.encode(), add_bos=True, special=True) + begin
        llm.eval(head)
        tail = end + llm.tokenize(suffix.encode(), add_bos=False, special=True)
        self.session = Session(name, tail, rendered.stops, rendered.format, prompt_tokens=len(head) + len(tail))
        return self.session

    def feed(self, llm: Any, vision: Vision, pcm: bytes, n_batch: int) -> Session:
        """Encode and evaluate `pcm` (whole windows, or the tail) after what the session holds."""
        session = self.current()
        if len(pcm) // 2 < MIN_SAMPLES:
            return session
        mtmd = vision.mtmd
        with vision.audio_chunks(pcm) as chunks:
            n_past = ctypes.c_int32(int(llm.n_tokens))
            for chunk in filter(vision.is_audio, chunks):
                if mtmd.mtmd_helper_eval_chunk_single(
                    vision.ctx, llm.ctx, chunk, n_past.value, 0, n_batch, False, ctypes.byref(n_past)
                ):
                    raise InvalidInput("llama.cpp failed to evaluate the audio")
                session.audio_tokens += int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
            llm.input_ids[int(llm.n_tokens) : n_past.value] = NOT_A_TOKEN
            llm.n_tokens = n_past.value
        session.audio_seconds += len(pcm) / 2 / RATE
        return session

    def take(
        self,
        llm: Any,
        vision: Vision,
        msg: dict[str, Any],
        render: Callable[[list[Any]], tuple[Any, Any]],
        n_batch: int,
    ) -> dict[str, Any]:
        """A `listen` request: its session started with its first piece (`render` makes the prompt
        with one marker from the request's messages, and the media paths), then the piece heard."""
        name = str(msg["session"])
        if self.session is None or self.session.name != name:
            self.end(llm)
            self.start(llm, vision, name, render(msg["messages"])[0])
        session = self.feed(llm, vision, base64.b64decode(msg.get("pcm", "")), n_batch)
        return {"audio_tokens": session.audio_tokens, "audio_seconds": session.audio_seconds}

    def last_piece(self, llm: Any, vision: Vision, msg: dict[str, Any], n_batch: int) -> tuple[Session, int]:
        """The transcript request's tail heard: its session, and the tokens evaluated after the end of
        speech (the tail's audio and the prompt's end; the rest went in while spoken)."""
        session = self.current(str(msg["listening"]))
        heard = session.audio_tokens
        self.feed(llm, vision, base64.b64decode(msg.get("pcm", "")), n_batch)
        return session, session.audio_tokens - heard + len(session.suffix)

    def current(self, name: str | None = None) -> Session:
        if self.session is None or (name is not None and self.session.name != name):
            raise InvalidInput(LOST)
        return self.session

    def end(self, llm: Any | None) -> None:
        """Forget the session and what it left in the context."""
        if self.session is not None and llm is not None:
            llm.reset()
            adapter.clear_kv(llm)
        self.session = None
