"""Messages between the engine (client) and a worker process: one JSON object per line.

Client -> worker: {"id": int, "op": str, ...payload}. Ops: load, generate, warm (standing prompt into
the KV cache, restored from disk when saved before), logits (next-token logits, for tests and
benchmarks), bench (prefill/decode speed, for load-parameter calibration), cancel (target: id),
stats, unload, shutdown, speak (text to a WAV's PCM, base64), listen (speech prefilled while it is
spoken; a `generate` naming the session writes its transcript).
Worker -> client: {"id": int, "event": str, ...}. Events: ready (id 0, at start), token (text),
result (data), error (kind, message). Every request ends with exactly one result or
error event. The worker writes protocol lines on a private copy of stdout and points fd 1 at
stderr, so nothing llama.cpp prints can corrupt the stream.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
# Requests can carry base64 images; the reader's line limit must hold them.
MAX_LINE_BYTES = 64 * 2**20

OP_LOAD, OP_GENERATE, OP_CANCEL, OP_STATS = "load", "generate", "cancel", "stats"
OP_UNLOAD, OP_SHUTDOWN, OP_WARM, OP_LOGITS = "unload", "shutdown", "warm", "logits"
OP_BENCH, OP_MEDIA_READY = "bench", "media_ready"  # media_ready: answered when the projector is loaded
# speak: text to speech (a talker: Omni's in the transformers worker, a Qwen3-TTS voice in llama.cpp's,
# whose `audio` events carry the PCM (base64) as it is made)
OP_SPEAK = "speak"
# listen: speech while it is spoken (pcm base64, session); `generate` with `listening` ends it
OP_LISTEN = "listen"
EV_READY, EV_TOKEN, EV_RESULT, EV_ERROR = "ready", "token", "result", "error"
EV_AUDIO = "audio"  # a piece of speech (16-bit mono PCM, base64 `pcm`) before the result
EV_CRASHED = "crashed"  # made by the client itself when the worker process dies: never sent by a worker
# Tests only: `variant=SIGNAL[,variant=SIGNAL]` makes a load of that variant (`plain` or `repack`) die
# by that signal in the worker, as llama.cpp's AMX kernels do on CPUs whose AMX traps.
FAULTS_ENV = "SARAI_OMNI_FAULTS"
PLAIN, REPACK = "plain", "repack"  # the llama.cpp load variants: weights only mmap'd, or also repacked


def variant(repack: bool) -> str:
    """The name of a load variant (calibration records and the fault injection use it)."""
    return REPACK if repack else PLAIN


def encode(message: dict[str, Any]) -> bytes:
    """One protocol line."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> dict[str, Any]:
    """Parse one protocol line; raises ValueError on garbage."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("protocol message is not an object")
    return message
