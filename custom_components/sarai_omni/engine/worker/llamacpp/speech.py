"""A voice in the llama.cpp worker: Qwen3-TTS through llama.cpp's audio generation (mtmd). Worker-only.

A voice is two GGUFs: the talker (libllama arch `qwen3tts`) and a projector with the speaker encoder,
the code predictor and code2wav. The talker writes one codebook-0 code per 80 ms frame; this module
samples it (as upstream's tools/tts: temperature 0.9, top-k 50, repetition penalty 1.05, only codes
and the end-of-speech token), the projector adds the other 15 codebooks, and code2wav turns the codes
into 24 kHz PCM piece by piece, each piece going out at once (`on_audio`): the first after
FIRST_PIECE frames (0.8 s of speech), then every PIECE frames, so a sentence is heard while the rest is
still being written. That needs this project's llama.cpp (engine/patches/: code2wav decodes exactly
the frames it is given); another build pads every piece to a 72-frame window, so there pieces are
whole windows (5.76 s). A reference clip (a voice) is what the speaker encoder hears; its PCM is
decoded once per voice and kept.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
import ctypes
from pathlib import Path
import time
from typing import Any

import numpy as np

from ... import defaults, protocol
from ...errors import InvalidInput, LoadFailed
from ...voices import QWEN3TTS_LANGUAGES, voice_clips
from . import adapter

FRAMES_PER_S = 12.5
CODEC_VOCAB = 3072  # the talker's codec head (the last rows of its vocabulary)
CODES = 2048  # codebook-0 entries; the codec rows above them are specials
EOS = "<|codec_eos_token|>"
TEMPERATURE, TOP_K, REPEAT_PENALTY = 0.9, 50, 1.05  # upstream's sampling (tools/tts)
WINDOW, FIRST_PIECE, PIECE = 72, 10, 25  # frames: code2wav's window; the streamed pieces (exact builds)
# The longest speech one sentence may take: a runaway talker (random weights, a bad voice) stops here.
SECONDS_PER_CHAR, SECONDS_MIN = 0.12, 2.0

OnAudio = Callable[[np.ndarray], None]


def answer_speak(
    voice: Voice | None, msg: dict[str, Any], send: Callable[[dict[str, Any]], None], cancelled: Callable[[], bool]
) -> dict[str, Any]:
    """A `speak` request: `audio` events (16-bit PCM, base64) as code2wav makes it, then the figures."""
    if voice is None:
        raise InvalidInput("the loaded model does not speak (it is not a Qwen3-TTS voice)")
    rid = int(msg.get("id", 0))

    def audio(pcm: np.ndarray) -> None:
        data = (pcm.clip(-1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        send({"id": rid, "event": protocol.EV_AUDIO, "pcm": base64.b64encode(data).decode()})

    text, language = str(msg.get("text", "")), str(msg.get("language") or "en")
    seed = int(msg.get("seed", 0xC0FFEE))
    return voice.speak(text, language, str(msg["voice"]), seed=seed, on_audio=audio, cancelled=cancelled)


def is_voice(architecture: str) -> bool:
    """A talker llama.cpp's audio generation drives (rather than a text model)."""
    return architecture == "qwen3tts"


def exact_pieces(version: str) -> bool:
    """This project's build from 0.3.36+sarai2 on decodes pieces of any length exactly (engine/patches/)."""
    label = version.partition("+sarai")[2]
    return label.isdigit() and int(label) >= 2


class Voice:
    """A loaded Qwen3-TTS talker and its projector: text in, float PCM out, frame by frame."""

    def __init__(self, llama_cpp: Any, msg: dict[str, Any]) -> None:
        import llama_cpp.mtmd_cpp as mtmd  # noqa: PLC0415  (worker-only)

        self.lib, self.mtmd = llama_cpp, mtmd
        self.model: Any = None
        self.ctx: Any = None
        self.mctx: Any = None
        self.gen: Any = None
        self.sample_rate = 24000
        self.references: dict[str, Any] = {}  # voice name -> its clip as an mtmd bitmap (decoded once)
        threads = int(msg.get("n_threads") or 2)
        llama_cpp.llama_backend_init()
        params = adapter.model_params(
            llama_cpp, repack=bool(msg.get("repack", False)), n_gpu_layers=int(msg.get("n_gpu_layers", 0))
        )
        self.model = llama_cpp.llama_model_load_from_file(str(msg["model_path"]).encode(), params)
        if not self.model:
            raise LoadFailed(f"llama.cpp could not load the voice {msg['model_path']}")
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = int(msg.get("n_ctx") or 4096)
        # every position's logits come out (embeddings on): a short batch keeps that buffer small
        cparams.n_batch = cparams.n_ubatch = min(int(msg.get("n_batch") or defaults.VOICE_BATCH), defaults.VOICE_BATCH)
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.embeddings = True  # the talker's hidden state drives the code predictor
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            self.close()
            raise LoadFailed(f"llama.cpp could not make a context for the voice {msg['model_path']}")
        self._projector(msg, threads)
        self.n_ctx, self.n_batch = int(cparams.n_ctx), int(cparams.n_batch)
        vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self.eos = self._token(vocab, EOS)
        self.voices = voice_clips(msg.get("voices_dir"))
        exact = exact_pieces(str(getattr(llama_cpp, "__version__", "")))
        self.first_piece, self.piece = (FIRST_PIECE, PIECE) if exact else (WINDOW, WINDOW)

    def _projector(self, msg: dict[str, Any], threads: int) -> None:
        mtmd, path = self.mtmd, msg.get("mmproj_path")
        if not path:
            self.close()
            raise LoadFailed("a Qwen3-TTS voice needs its projector (speaker encoder, code predictor, code2wav)")
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = int(msg.get("n_gpu_layers", 0)) != 0
        params.n_threads = threads
        params.print_timings = False
        self.mctx = mtmd.mtmd_init_from_file(str(path).encode(), self.model, params)
        if not self.mctx or mtmd.mtmd_gen_audio_get_info(self.mctx).type == mtmd.MTMD_GEN_AUDIO_TYPE_NONE:
            self.close()
            raise LoadFailed(f"{path} is not a Qwen3-TTS projector for this talker (it generates no audio)")
        self.sample_rate = int(mtmd.mtmd_gen_audio_get_info(self.mctx).sample_rate)
        self.gen = mtmd.mtmd_helper_gen_audio_init(self.ctx, self.mctx)

    def _token(self, vocab: Any, piece: str) -> int:
        for token in range(self.n_vocab - CODEC_VOCAB, self.n_vocab):
            if self.lib.llama_vocab_get_text(vocab, token) == piece.encode():
                return token
        raise LoadFailed(f"the talker has no {piece} token: not a Qwen3-TTS talker")

    def speak(
        self, text: str, language: str, voice: str, *, seed: int, on_audio: OnAudio, cancelled: Callable[[], bool]
    ) -> dict[str, Any]:
        """Say `text`; each piece of PCM goes to `on_audio` as soon as code2wav made it."""
        started = time.perf_counter()
        if language not in QWEN3TTS_LANGUAGES:
            raise InvalidInput(f"Qwen3-TTS speaks {', '.join(QWEN3TTS_LANGUAGES)}, not {language!r}")
        self._set_input(text, language, self._reference(voice), seed)
        while (left := self.mtmd.mtmd_helper_gen_audio_step_prompt(self.gen, self.n_batch)) > 0:
            pass
        if left < 0:
            raise InvalidInput("llama.cpp could not read the text to speak")
        prompt_ms = (time.perf_counter() - started) * 1000
        first: list[float] = []
        sent = [0]

        def flush() -> None:
            pcm = self._output()
            if pcm.size > sent[0]:
                on_audio(pcm[sent[0] :])
                sent[0] = pcm.size
                if not first:
                    first.append((time.perf_counter() - started) * 1000)

        frames = self._frames(self._limit(text), cancelled, flush)
        flush()
        return {
            "sample_rate": self.sample_rate,
            "frames": frames,
            "seconds": round(sent[0] / self.sample_rate, 3),
            "prompt_ms": round(prompt_ms, 1),
            "first_audio_ms": round(first[0], 1) if first else None,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def _frames(self, limit: int, cancelled: Callable[[], bool], flush: Callable[[], None]) -> int:
        """Write frames until the talker says it has finished (or `limit`); flush every code2wav window."""
        rng = np.random.default_rng(self._seed)
        history: list[int] = []
        token = self._sample(rng, history)
        state = self.lib.llama_get_embeddings_ith(self.ctx, -1)
        out, stop, frames, due = ctypes.POINTER(ctypes.c_float)(), ctypes.c_bool(False), 0, self.first_piece
        while frames < limit and not cancelled():
            if self.mtmd.mtmd_helper_gen_audio_step_gen(self.gen, token, state, ctypes.byref(out), ctypes.byref(stop)):
                raise InvalidInput(f"llama.cpp could not generate frame {frames} of the speech")
            if stop.value or not out:
                break
            frames += 1
            if frames == due:  # code2wav decodes what is new (another build did it at the window's end)
                flush()
                due += self.piece
            history.append(token)
            state, token = out, self._sample(rng, history)
        return frames

    def _sample(self, rng: np.random.Generator, history: list[int]) -> int:
        """The next codebook-0 code (or the end of speech) from the talker's codec logits."""
        base = self.n_vocab - CODEC_VOCAB
        logits = np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
        codec = logits[base:].astype(np.float64)
        allowed = np.full(CODEC_VOCAB, -np.inf)
        allowed[:CODES] = codec[:CODES]
        allowed[self.eos - base] = codec[self.eos - base]
        for code in set(history[-64:]):
            i = code - base
            allowed[i] = allowed[i] / REPEAT_PENALTY if allowed[i] > 0 else allowed[i] * REPEAT_PENALTY
        top = np.argpartition(allowed, -TOP_K)[-TOP_K:]
        scaled = allowed[top] / TEMPERATURE
        p = np.exp(scaled - scaled.max())
        return base + int(top[rng.choice(TOP_K, p=p / p.sum())])

    def _set_input(self, text: str, language: str, reference: Any, seed: int) -> None:
        raw = text.encode()
        inp = self.mtmd.mtmd_helper_gen_audio_inp()
        inp.seq_id, inp.prompt, inp.prompt_len, inp.speaker_ref = 0, raw, len(raw), reference
        inp.lang, inp.top_k, inp.top_p, inp.seed = language.encode(), TOP_K, 1.0, seed & 0xFFFFFFFF
        inp.out_type = self.mtmd.MTMD_HELPER_GEN_AUDIO_OUTTYPE_PCM
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        if self.mtmd.mtmd_helper_gen_audio_set_input(self.gen, ctypes.byref(inp)):
            raise InvalidInput("llama.cpp refused the text or the voice's reference clip")
        self._seed = seed

    def _output(self) -> np.ndarray:
        rate, data = ctypes.c_int32(), ctypes.POINTER(ctypes.c_char)()
        size, samples = ctypes.c_size_t(), ctypes.c_int64()
        if self.mtmd.mtmd_helper_gen_audio_get_output(
            self.gen, ctypes.byref(rate), ctypes.byref(data), ctypes.byref(size), ctypes.byref(samples)
        ):
            raise InvalidInput("llama.cpp's code2wav failed")
        return np.frombuffer(ctypes.string_at(data, size.value), dtype=np.float32)

    def _reference(self, voice: str) -> Any:
        """The voice's reference clip, decoded (and resampled to 24 kHz) by mtmd once."""
        if voice in self.references:
            return self.references[voice]
        path = self.voices.get(voice)
        if path is None:
            raise InvalidInput(f"unknown voice {voice!r} (this voice speaks {', '.join(sorted(self.voices))})")
        try:
            raw = Path(path).read_bytes()
        except OSError as err:
            raise InvalidInput(f"the voice {voice!r} cannot be read: {path}: {err.strerror}") from err
        buf = (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw)
        bitmap = self.mtmd.mtmd_helper_bitmap_init_from_buf(self.mctx, buf, len(raw), False)
        if not bitmap:
            raise InvalidInput(f"the voice {voice!r} is not an audio file llama.cpp reads (WAV, MP3, FLAC): {path}")
        self.references[voice] = bitmap
        return bitmap

    def _limit(self, text: str) -> int:
        return int(FRAMES_PER_S * max(SECONDS_MIN, SECONDS_PER_CHAR * len(text)))

    def close(self) -> None:
        for bitmap in self.references.values():
            self.mtmd.mtmd_bitmap_free(bitmap)
        if self.gen:
            self.mtmd.mtmd_helper_gen_audio_free(self.gen)
        if self.mctx:
            self.mtmd.mtmd_free(self.mctx)
        if self.ctx:
            self.lib.llama_free(self.ctx)
        if self.model:
            self.lib.llama_model_free(self.model)
        self.model = self.ctx = self.mctx = self.gen = None
