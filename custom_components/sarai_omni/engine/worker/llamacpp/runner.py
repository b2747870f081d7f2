"""The llama.cpp worker process's model owner (`python -m <package>.engine.worker.llamacpp`).

Only this module imports llama_cpp, and only inside the worker process, so a native crash (segfault,
illegal instruction, OOM kill) takes down this process alone. Requests are served one at a time in
arrival order; a reader thread handles `cancel` at once so a running generation stops at its next
token.
Over 400 lines because every handler works on the one loaded model's state (its cache, projector,
drafter, listening session) on the one request thread; what stands alone is in kvfiles, grammar,
media, listening, decoding and speech (a Qwen3-TTS voice, loaded instead of a text model).
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Iterator, Sequence
import contextlib
import hashlib
import json
import os
from pathlib import Path
import signal
import threading
import time
from typing import Any

from ... import defaults, protocol
from ...errors import ContextTooSmall, InvalidInput, LoadFailed
from ...gguf import read_gguf
from ...prompts import Message, StopMatcher, drop_oldest_turn, has_media, media_parts, render_prompt
from ...protocol import variant
from .. import serve
from . import adapter
from .decoding import Drafter, decode
from .grammar import request_grammar
from .kvfiles import KVStateFiles
from .listening import Listening
from .media import Vision, parked_text_cache, remove_stale_parked
from .speech import Voice, answer_speak, is_voice

Send = serve.Send


class Runner:
    """The model and context of this worker, and what it measured."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._llm: Any = None
        self._template: str | None = None
        self.requests = serve.Requests()
        self.load_ms = 0.0
        self.model_path: str | None = None
        self._kv: KVStateFiles | None = None
        self._drafter = Drafter()
        self._vision_error: str | None = None
        self._dropped: tuple[str, int] = ("", 0)  # (conversation, oldest turns it drops): a stable cut
        self._vision: Vision | None = None
        self._vision_ready = threading.Event()
        self._vision_ready.set()
        self._load_msg: dict[str, Any] = {}
        self._finished: deque[dict[str, Any]] = deque(maxlen=8)  # how recent generations ended
        self._listening = Listening()
        self._voice: Voice | None = None

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        if op not in (protocol.OP_LISTEN, protocol.OP_STATS) and not msg.get("listening"):
            self._listening.end(self._llm)  # another request uses the model: the session's context goes
        if op == protocol.OP_LISTEN:
            return self.listen(msg)
        if op == protocol.OP_LOAD:
            return self.load(msg)
        if op == protocol.OP_SPEAK:
            return self.speak(msg)
        if op == protocol.OP_GENERATE:
            return self.generate(msg)
        if op == protocol.OP_WARM:
            return self.warm(msg)
        if op == protocol.OP_LOGITS:
            return self.logits(msg)
        if op == protocol.OP_BENCH:
            return self.bench(msg)
        if op == protocol.OP_STATS:
            return self.stats()
        if op == protocol.OP_UNLOAD:
            self.unload()
            return {"state": "unloaded"}
        raise InvalidInput(f"unknown op {op!r}")

    # -- load -----------------------------------------------------------------------------------
    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        llama_cpp = adapter.import_llama_cpp()
        self.unload()
        started = time.perf_counter()
        if is_voice(read_gguf(msg["model_path"]).architecture):
            return self._load_voice(llama_cpp, msg, started)
        try:
            self._llm = _new_llama(llama_cpp, msg)
        except (ValueError, RuntimeError) as err:
            raise LoadFailed(f"llama.cpp could not load {msg.get('model_path')}: {err}") from err
        _injected_fault(msg)
        self.load_ms = (time.perf_counter() - started) * 1000
        self.model_path = msg["model_path"]
        self._kv = KVStateFiles(msg)
        remove_stale_parked(self._kv.dir)
        self._load_msg = msg
        self._drafter = Drafter(enabled=bool(msg.get("prompt_lookup", defaults.PROMPT_LOOKUP)))
        self._vision_error = None
        self._vision_ready = threading.Event()
        if msg.get("mmproj_path"):  # read while text is already answered (a 7B's is 2.6 GB)
            threading.Thread(target=self._load_vision, args=(msg,), name="projector", daemon=True).start()
        else:
            self._vision_ready.set()
        meta = self._llm.metadata
        self._template = meta.get("tokenizer.chat_template") or None
        return {
            "load_ms": self.load_ms,
            "n_ctx": self._llm.n_ctx(),
            "chat_template": bool(self._template),
            "vision_pending": not self._vision_ready.is_set(),
        }

    def _load_voice(self, llama_cpp: Any, msg: dict[str, Any], started: float) -> dict[str, Any]:
        self._voice = Voice(llama_cpp, msg)
        _injected_fault(msg)
        self.load_ms, self.model_path = (time.perf_counter() - started) * 1000, msg["model_path"]
        return {"load_ms": self.load_ms, "n_ctx": self._voice.n_ctx, "voices": list(self._voice.voices)}

    def speak(self, msg: dict[str, Any]) -> dict[str, Any]:
        rid = int(msg.get("id", 0))
        return answer_speak(self._voice, msg, self._send, lambda: self.requests.is_cancelled(rid))

    def _load_vision(self, msg: dict[str, Any]) -> None:
        try:
            threads, use_gpu = int(msg.get("n_threads", defaults.N_THREADS)), int(msg.get("n_gpu_layers", 0)) != 0
            self._vision = Vision(self._llm, msg["mmproj_path"], threads, use_gpu)
        except LoadFailed as err:  # e.g. another model's projector: text turns still work
            self._vision_error = str(err)
        finally:
            self._vision_ready.set()

    def answer_when_media_ready(self, rid: int) -> None:
        """Answer `rid` once the projector is loaded (or failed), without holding up other requests."""

        def wait() -> None:
            self._vision_ready.wait()
            hearing = self._vision.hearing if self._vision is not None else None
            self._send(
                {
                    "id": rid,
                    "event": protocol.EV_RESULT,
                    "data": {"vision_error": self._vision_error, "hearing": hearing},
                }
            )

        threading.Thread(target=wait, name="media-ready", daemon=True).start()

    def unload(self) -> None:
        if self._voice is not None:
            self._voice.close()
            self._voice = None
        self._vision_ready.wait()  # the projector holds the model while it loads
        if self._vision is not None:
            self._vision.close()
            self._vision = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def stats(self) -> dict[str, Any]:
        return {
            "loaded": self._llm is not None or self._voice is not None,
            "model_path": self.model_path,
            "load_ms": self.load_ms,
            "n_tokens": self._llm.n_tokens if self._llm is not None else 0,
            "finished": list(self._finished),
            "pending_cancels": self.requests.pending_cancels(),
            "n_batch": self._llm.n_batch if self._llm is not None else 0,
            "prompt_lookup": self._drafter.stats(),
        }

    # -- generate -------------------------------------------------------------------------------
    def generate(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stream a reply. Text prompts reuse the cached prefix; prompts with images go through mtmd."""
        self._require_model()
        started = time.perf_counter()
        if msg.get("listening"):
            return self._generate_listened(msg, started)
        if has_media(msg["messages"]):
            return self._generate_media(msg, started)
        messages, tokens, stops, fmt = self._prompt(msg, int(msg.get("max_tokens", defaults.MAX_TOKENS)))
        rendered = time.perf_counter()
        cached = self._reuse_prefix(tokens)
        kept = time.perf_counter()
        self._llm.eval(tokens[cached:])
        prefilled = time.perf_counter()
        stats = {
            "prompt_tokens": len(tokens),
            "cached_tokens": cached,
            "evaluated_prompt_tokens": len(tokens) - cached,
            "dropped_messages": len(msg["messages"]) - len(messages),
            "prompt_format": fmt,
        }
        result = self._stream(msg, [], stops, started)
        ms = {"prompt_ms": rendered - started, "prefix_ms": kept - rendered, "prefill_ms": prefilled - kept}
        return result | stats | {"stages": _stages({k: v * 1000 for k, v in ms.items()}, result)}

    def _generate_media(self, msg: dict[str, Any], started: float) -> dict[str, Any]:
        """The text before the first image reuses the cached prefix; whatever of the context that
        text does not hold (another conversation) is parked around the request and put back."""
        llm, vision = self._llm, self._media_projector()
        rendered, paths = self._render_media(msg["messages"], msg.get("tools"))
        images = [_read_media(p) for p in paths]
        prepared = time.perf_counter()
        head = vision.head_tokens(llm, rendered.text)
        shared = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), head)
        park = (
            parked_text_cache(llm, self._kv.dir if self._kv else None)
            if shared < llm.n_tokens
            else contextlib.nullcontext()
        )
        with park:
            done = vision.evaluate(llm, rendered.text, images, self._n_batch, head=head, keep=self._reuse_prefix)
            result = self._stream(msg, [], rendered.stops, started)
        stats = _media_stats(
            done.prompt_tokens, done.evaluated_tokens, vision.audio_seconds, vision.audio_tokens, rendered.format
        )
        ms = {"prompt_ms": (prepared - started) * 1000, "encoder_ms": done.encoder_ms, "prefill_ms": done.prefill_ms}
        stages = _stages(ms, result) | {"images_reused": done.images_reused}
        return result | stats | {"stages": stages}

    def listen(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Take the next piece of a spoken clip (its session starts with the first one)."""
        llm = self._require_model()
        if msg.get("end"):
            self._listening.end(llm)
            return {}
        return self._listening.take(llm, self._media_projector(), msg, self._render_media, self._n_batch)

    def _generate_listened(self, msg: dict[str, Any], started: float) -> dict[str, Any]:
        """The transcript of a listening session: its tail, the prompt's end, then the answer."""
        llm, vision = self._llm, self._media_projector()
        try:
            session, evaluated = self._listening.last_piece(llm, vision, msg, self._n_batch)
            result = self._stream(msg, session.suffix, session.stops, started)
        finally:
            self._listening.end(llm)
        n_prompt = session.prompt_tokens + session.audio_tokens
        return result | _media_stats(
            n_prompt, evaluated, session.audio_seconds, session.audio_tokens, session.prompt_format
        )

    def _render_media(self, messages: list[Message], tools: Any = None) -> tuple[Any, list[str]]:
        """The prompt with mtmd's marker where each image or clip goes, and their paths."""
        text_messages, paths = media_parts(messages, self._media_projector().marker)
        return render_prompt(text_messages, self._template, eos_token=self._eos_text(), tools=tools), paths

    @property
    def _n_batch(self) -> int:
        return int(self._load_msg.get("n_batch", defaults.N_BATCH))

    def _media_projector(self) -> Vision:
        self._vision_ready.wait()
        if self._vision is None:
            raise InvalidInput(self._vision_error or "this model has no vision projector (mmproj) configured")
        return self._vision

    def _stream(
        self, msg: dict[str, Any], new_tokens: list[int], stops: tuple[str, ...], started: float
    ) -> dict[str, Any]:
        """Sample after `new_tokens` are evaluated, sending text as it forms; stop at EOG/stop/limit/cancel."""
        llm, rid = self._llm, int(msg["id"])
        # Never past the context: the answer stops there as `length` and keeps its text.
        max_tokens = min(int(msg.get("max_tokens", defaults.MAX_TOKENS)), llm.n_ctx() - llm.n_tokens - len(new_tokens))
        if max_tokens <= 0:
            raise InvalidInput("the prompt fills the model's context (n_ctx): nothing is left for the answer")
        matcher = StopMatcher([*stops, *msg.get("stop", [])])
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n_out, first_at, last_at, sent_at, reason = 0, 0.0, 0.0, 0.0, "length"
        for token in self._sample(new_tokens, msg, request_grammar(msg)):
            now = time.perf_counter()
            first_at = first_at or now
            if self._is_eog(token) and not msg.get("ignore_eos"):  # end of turn: the model finished
                reason = "stop"
                break
            n_out, last_at = n_out + 1, now
            text = matcher.feed(decoder.decode(llm.detokenize([token], special=False)))
            if text:
                self._send({"id": rid, "event": protocol.EV_TOKEN, "text": text})
                sent_at = sent_at or time.perf_counter()
            if matcher.stopped:
                reason = "stop"
                break
            if self.requests.is_cancelled(rid):
                reason = "cancelled"
                break
            if n_out >= max_tokens:
                break
        tail = matcher.feed(decoder.decode(b"", final=True)) + matcher.flush()
        if tail:
            self._send({"id": rid, "event": protocol.EV_TOKEN, "text": tail})
        decode_s = last_at - first_at
        self._finished.append({"id": rid, "finish_reason": reason, "completion_tokens": n_out})
        return {
            "finish_reason": reason,
            "completion_tokens": n_out,
            "ttft_ms": ((first_at or time.perf_counter()) - started) * 1000,
            "tokens_per_second": (n_out - 1) / decode_s if n_out > 1 and decode_s > 0 else 0.0,
            "first_sent_ms": ((sent_at or time.perf_counter()) - started) * 1000,
        }

    def warm(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Put the standing prompt in the KV cache: from the context, from disk, or by evaluating it.

        A freshly evaluated prompt's KV state is saved to disk, so a restarted worker (or HA)
        restores it in milliseconds instead of evaluating it again.
        """
        llm, started = self._require_model(), time.perf_counter()
        _, tokens, _, _ = self._prompt(msg, 0)
        cached = self._reuse_prefix(tokens)
        source = "context"
        if cached < len(tokens) - 1:
            path = self._kv.path_for(tokens) if self._kv else None
            if path is not None and self._kv is not None and self._kv.restore(llm, path, tokens):
                cached, source = len(tokens), "disk"
            else:
                llm.eval(tokens[cached:])
                source = "evaluated"
                if path is not None and self._kv is not None:
                    self._kv.save(llm, path, tokens)
        return {
            "source": source,
            "prompt_tokens": len(tokens),
            "cached_tokens": cached,
            "evaluated_prompt_tokens": len(tokens) - cached,
            "ms": (time.perf_counter() - started) * 1000,
        }

    def logits(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Evaluate the prompt (reusing the cached prefix) and return the next token's top logits."""
        import llama_cpp  # noqa: PLC0415  (worker-only)
        import numpy as np  # noqa: PLC0415

        llm = self._require_model()
        _, tokens, _, _ = self._prompt(msg, 0)
        cached = self._reuse_prefix(tokens)
        llm.eval(tokens[cached:])
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()
        top = np.argsort(row)[::-1][: int(msg.get("top", 20))]
        return {
            "evaluated_prompt_tokens": len(tokens) - cached,
            "ids": top.tolist(),
            "logits": [float(row[i]) for i in top],
        }

    def bench(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Prefill and decode speed on synthetic tokens (load-parameter calibration)."""
        llm = self._require_model()
        n_vocab = llm.n_vocab()
        prompt = [(7 + 31 * i) % n_vocab for i in range(int(msg.get("prompt_tokens", 64)))]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        n_gen = int(msg.get("gen_tokens", 16))
        for i in range(n_gen):
            llm.eval([(11 + 13 * i) % n_vocab])
        t2 = time.perf_counter()
        llm.reset()
        return {"prefill_tps": len(prompt) / (t1 - t0), "decode_tps": n_gen / (t2 - t1)}

    def _require_model(self) -> Any:
        if self._llm is None:
            raise InvalidInput("no model loaded")
        return self._llm

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the KV cache of the longest common prefix with the context; return its length.

        At least the last prompt token is always evaluated again (its logits start the reply).
        """
        llm = self._llm
        cached = _common_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        if cached and adapter.keep_prefix(llm, cached):
            llm.n_tokens = cached
            return cached
        llm.reset()  # this cache cannot drop a suffix (some recurrent/SWA caches): start over
        return 0

    def _is_eog(self, token: int) -> bool:
        return adapter.is_end_of_generation(adapter.import_llama_cpp(), self._llm, token)

    def _prompt(self, msg: dict[str, Any], max_tokens: int) -> tuple[list[Message], list[int], tuple[str, ...], str]:
        """Render and tokenize, dropping the oldest turns while the prompt does not fit n_ctx.

        Once history must go, it goes down to DROP_TO of the room, and later turns of the same
        conversation start from the same cut: they append to a stable prefix (its KV cache is
        reused) instead of each turn dropping one more message and evaluating all history again.
        """
        llm = self._llm
        full = list(msg["messages"])
        room = llm.n_ctx() - min(max_tokens, llm.n_ctx() // 2)
        eos = self._eos_text()
        key = _conversation_key(full)
        dropped = self._dropped[1] if self._dropped[0] == key else 0
        messages, limit = _drop(full, dropped), room
        while True:
            rendered = render_prompt(messages, self._template, eos_token=eos, tools=msg.get("tools"))
            tokens = llm.tokenize(rendered.text.encode(), add_bos=True, special=True)
            if len(tokens) <= limit:
                self._dropped = (key, dropped)
                return messages, tokens, rendered.stops, rendered.format
            try:
                messages, dropped = drop_oldest_turn(messages), dropped + 1
            except InvalidInput:
                if len(tokens) > room:
                    raise ContextTooSmall(tokens=len(tokens), n_ctx=llm.n_ctx(), answer=llm.n_ctx() - room) from None
                limit = room  # the lower mark cannot be reached, but it fits
                continue
            limit = int(room * DROP_TO)

    def _eos_text(self) -> str:
        llm = self._llm
        return llm.detokenize([llm.token_eos()], special=True).decode(errors="ignore") if llm.token_eos() >= 0 else ""

    def _sample(self, tokens: list[int], msg: dict[str, Any], grammar: Any) -> Iterator[int]:
        """Tokens after `tokens` (evaluated after the cached prefix _reuse_prefix kept), with the
        sampler llama-cpp-python's own generate() would build, drafting by prompt lookup when it pays."""
        sampler = adapter.new_sampler(
            self._llm,
            temp=float(msg.get("temperature", defaults.TEMPERATURE)),
            top_k=int(msg.get("top_k", defaults.TOP_K)),
            top_p=float(msg.get("top_p", defaults.TOP_P)),
            min_p=float(msg.get("min_p", defaults.MIN_P)),
            repeat_penalty=float(msg.get("repeat_penalty", defaults.REPEAT_PENALTY)),
            grammar=grammar,
        )
        return decode(self._llm, tokens, sampler, self._drafter)


DROP_TO = 0.6  # share of the prompt room that history is cut down to when it overflows


def _conversation_key(messages: list[Message]) -> str:
    """Which conversation this is: its first message after the system prompt."""
    first = next((m for m in messages if m.get("role") != "system"), {})
    return hashlib.sha256(json.dumps(first, sort_keys=True, default=str).encode()).hexdigest()


def _drop(messages: list[Message], count: int) -> list[Message]:
    for _ in range(count):
        try:
            messages = drop_oldest_turn(messages)
        except InvalidInput:
            break
    return messages


def _stages(ms: dict[str, float], result: dict[str, Any]) -> dict[str, float]:
    """Where the worker's time to the first token went (ms): the stages given, then the first token's
    own (the sampler and the first sample), and how long its text was held back after it (a possible
    stop string or tag, a character not complete yet) before the first text went out."""
    ttft, sent = result["ttft_ms"], result["first_sent_ms"]
    first = {"first_token_ms": ttft - sum(ms.values()), "held_ms": max(sent - ttft, 0.0)}
    return {key: round(value, 1) for key, value in (ms | first).items()}


def _media_stats(n_prompt: int, evaluated: int, seconds: float, tokens: int, prompt_format: str) -> dict[str, Any]:
    """What a prompt through mtmd cost: `evaluated` of its `n_prompt` tokens now (the rest came from
    the cached prefix, or was evaluated while the speech was spoken, by `listen`)."""
    return {
        "prompt_tokens": n_prompt,
        "cached_tokens": n_prompt - evaluated,
        "evaluated_prompt_tokens": evaluated,
        "audio_seconds": seconds,
        "audio_tokens": tokens,
        "dropped_messages": 0,
        "prompt_format": prompt_format,
    }


def _read_media(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}") from err


def _common_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """Tokens llama_cpp will reuse: it always re-evaluates at least the last prompt token."""
    n = 0
    for a, b in zip(cached, tokens[:-1], strict=False):
        if a != b:
            break
        n += 1
    return n


def _injected_fault(msg: dict[str, Any]) -> None:
    """Die as a trapping CPU would, when the tests ask for it (protocol.FAULTS_ENV) for this variant."""
    faults = dict(f.split("=", 1) for f in os.environ.get(protocol.FAULTS_ENV, "").split(",") if "=" in f)
    if name := faults.get(variant(bool(msg.get("repack")))):
        sig = signal.Signals[name]
        signal.signal(sig, signal.SIG_DFL)  # Python's own handlers (SIGINT...) must not catch it
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the signal is delivered at once; never go on loading


def _preimport() -> None:
    with contextlib.suppress(Exception):
        adapter.import_llama_cpp()


def _new_llama(llama_cpp: Any, msg: dict[str, Any]) -> Any:
    """The Llama object of a load request (`repack: false`: the weights stay only in the mmap'd file)."""
    kv_type = {"f16": 1, "q8_0": 8}.get(str(msg.get("kv_type", "f16")), 1)
    return adapter.new_llama(
        llama_cpp,
        repack=bool(msg.get("repack", False)),
        model_path=msg["model_path"],
        n_ctx=int(msg.get("n_ctx", defaults.N_CTX)),
        n_threads=int(msg.get("n_threads", os.cpu_count() or 1)),
        n_batch=int(msg.get("n_batch", defaults.N_BATCH)),
        n_gpu_layers=int(msg.get("n_gpu_layers", 0)),
        seed=int(msg.get("seed", 0xC0FFEE)),
        type_k=kv_type,
        type_v=kv_type,
        flash_attn=bool(msg.get("flash_attn")) or kv_type != 1,  # a quantized V cache needs it
        use_mmap=True,
        swa_full=True,  # sliding-window caches must be able to drop a suffix for prefix reuse
        verbose=False,
    )


def main() -> None:
    serve.main(Runner, _preimport)
