"""Images and audio in the worker: llama.cpp's mtmd with the model's projector (mmproj). Worker-only.

mtmd decodes both from the file's bytes (JPEG/PNG/...; WAV/MP3/FLAC, resampled to the projector's
rate); a projector with an audio encoder (Qwen2.5-Omni's) hears. With this project's llama.cpp patch
(engine/patches/) Omni's audio is encoded as transformers encodes it, in 2 s windows of the clip's own
frames (25 tokens per second); an unpatched llama.cpp pads every clip to 30 s windows (750 tokens).
Which one this library does is measured once per projector (`hearing`).

A multimodal prompt's text before its first image or clip is prefix-cached like a text prompt: a
camera question after the standing prompt (instructions, tools, entities) evaluates only the image
and the question. A prompt that shares little with the context (another system prompt) is evaluated
from position 0 instead, with the text path's KV cache parked in a file around it and restored after,
so an analysis does not cost the next conversation turn its cached system prompt and history. An
image whose pixels were encoded before (a follow-up question about an unchanged frame) reuses the
encoder's output.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
import contextlib
import ctypes
from dataclasses import dataclass
import hashlib
import os
from pathlib import Path
import tempfile
import time
from typing import Any

import numpy as np

from ...errors import InvalidInput, LoadFailed
from ...procmem import alive
from . import adapter

NO_HEARING = "this model's projector has no audio encoder: it cannot hear"
FAITHFUL, PADDED = "faithful", "padded_30s"  # how this llama.cpp encodes Omni's audio (`hearing`)
WINDOW_TOKENS_PER_S = 25  # Qwen2.5-Omni in transformers: 2 s windows of 50 tokens
# What the context's token record holds where mtmd evaluated (media embeddings, its own text): no
# token, so neither a cached-prefix match nor a prompt-lookup draft is ever read from stale ids.
NOT_A_TOKEN = -1
ENCODED_BYTES = 64 * 2**20  # encoder outputs kept for follow-up questions (a 1024 px frame: ~11 MB)


@dataclass(frozen=True, slots=True)
class Evaluated:
    """What a multimodal prompt took: its tokens, those evaluated now, and where the time went."""

    prompt_tokens: int
    evaluated_tokens: int
    encoder_ms: float
    prefill_ms: float
    images_reused: int


class Vision:
    """The mtmd context of one loaded model and its projector."""

    def __init__(self, llm: Any, mmproj_path: str, n_threads: int, use_gpu: bool = False) -> None:
        import llama_cpp.mtmd_cpp as mtmd  # noqa: PLC0415  (worker-only)

        self.mtmd = mtmd
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu  # the projector follows the model's layers onto a GPU
        params.n_threads = n_threads
        params.print_timings = False
        self.ctx = mtmd.mtmd_init_from_file(mmproj_path.encode(), llm.model, params)
        if not self.ctx:
            raise LoadFailed(f"llama.cpp could not load the projector {mmproj_path} for this model")
        self.marker = mtmd.mtmd_default_marker().decode()
        self.has_vision = bool(mtmd.mtmd_support_vision(self.ctx))
        self.has_audio = bool(mtmd.mtmd_support_audio(self.ctx))
        self.audio_seconds = 0.0  # of the last evaluate's clips
        self.audio_tokens = 0  # of the last evaluate's clips
        self.hearing: str | None = None  # FAITHFUL or PADDED, for a projector that hears
        self.audio_markers: tuple[list[int], list[int]] = ([], [])  # the text mtmd puts around a clip
        self._outputs: OrderedDict[bytes, np.ndarray[Any, Any]] = OrderedDict()  # encoder outputs by pixels
        if self.has_audio:
            self._probe_audio()

    def _probe_audio(self) -> None:
        """One marker with a second of silence, tokenized (no encoder runs: tokenizing only cuts the
        mel into windows): FAITHFUL when it takes about 25 tokens, PADDED when a 30 s window's worth;
        and the tokens before and after the clip (<|audio_bos|>, <|audio_eos|> for Omni)."""
        rate = self.mtmd.mtmd_get_audio_sample_rate(self.ctx) or 16000
        with self.audio_chunks(bytes(2 * rate)) as chunks:
            audio = [i for i, chunk in enumerate(chunks) if self.is_audio(chunk)]
            tokens = self.count_audio_tokens(chunks)
            before = [t for chunk in chunks[: audio[0]] for t in self._text_tokens(chunk)]
            after = [t for chunk in chunks[audio[-1] + 1 :] for t in self._text_tokens(chunk)]
        self.audio_markers = (before, after)
        self.hearing = FAITHFUL if tokens <= WINDOW_TOKENS_PER_S + 1 else PADDED

    @contextlib.contextmanager
    def audio_chunks(self, pcm: bytes) -> Iterator[list[Any]]:
        """The mtmd chunks, in order, of one marker with `pcm` (16-bit mono at the projector's rate)."""
        mtmd = self.mtmd
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        bitmap = mtmd.mtmd_bitmap_init_from_audio(samples.size, samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        try:
            with self.chunks() as chunks:
                self.tokenize(chunks, self.marker, [bitmap], add_special=False)
                yield self.chunk_list(chunks)
        finally:
            mtmd.mtmd_bitmap_free(bitmap)

    def chunk_list(self, chunks: Any) -> list[Any]:
        return [self.mtmd.mtmd_input_chunks_get(chunks, i) for i in range(self.mtmd.mtmd_input_chunks_size(chunks))]

    def is_audio(self, chunk: Any) -> bool:
        return bool(self.mtmd.mtmd_input_chunk_get_type(chunk) == self.mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO)

    def count_audio_tokens(self, chunks: list[Any]) -> int:
        return sum(int(self.mtmd.mtmd_input_chunk_get_n_tokens(chunk)) for chunk in chunks if self.is_audio(chunk))

    def _text_tokens(self, chunk: Any) -> list[int]:
        n = ctypes.c_size_t(0)
        ids = self.mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
        return [int(ids[i]) for i in range(n.value)]

    def tokenize(self, chunks: Any, text: str, bitmaps: list[Any], add_special: bool = True) -> None:
        mtmd = self.mtmd
        prompt = mtmd.mtmd_input_text()
        data = text.encode()
        prompt.text, prompt.text_len, prompt.add_special, prompt.parse_special = data, len(data), add_special, True
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        if mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(prompt), array, len(bitmaps)) != 0:
            raise InvalidInput("the prompt and images could not be tokenized together")

    def close(self) -> None:
        if self.ctx:
            self.mtmd.mtmd_free(self.ctx)
            self.ctx = None

    def head_tokens(self, llm: Any, text: str) -> list[int]:
        """The tokens of `text` before its first media marker (what a text prefix cache can hold)."""
        return list(llm.tokenize(text.partition(self.marker)[0].encode(), add_bos=True, special=True))

    def evaluate(
        self,
        llm: Any,
        text: str,
        images: list[bytes],
        n_batch: int,
        *,
        head: list[int],
        keep: Callable[[list[int]], int],
    ) -> Evaluated:
        """Evaluate `text` (one marker per image or clip) with the media.

        `head` is `head_tokens(llm, text)`; `keep(head)` keeps the context's cached prefix of it and
        says how long that is. Logits of the last token are ready for sampling.
        """
        with self._bitmaps(images) as bitmaps, self.chunks() as chunks:
            self.tokenize(chunks, self.marker + text.partition(self.marker)[2], bitmaps, add_special=False)
            parts = self.chunk_list(chunks)
            self.audio_tokens = self.count_audio_tokens(parts)
            if (needed := len(head) + int(self.mtmd.mtmd_helper_get_n_tokens(chunks))) > llm.n_ctx():
                raise InvalidInput(_too_long(llm, text, len(images), needed))
            cached = keep(head)
            started = time.perf_counter()
            llm.eval(head[cached:])
            adapter.keep_prefix(llm, int(llm.n_tokens))  # nothing stale after the head
            encoder_s, reused = self._evaluate_parts(llm, parts, n_batch)
        prefill_ms = (time.perf_counter() - started - encoder_s) * 1000
        # tokens; with M-RoPE an image takes fewer positions (n_tokens) than tokens
        return Evaluated(needed, needed - cached, encoder_s * 1000, prefill_ms, reused)

    def _evaluate_parts(self, llm: Any, parts: list[Any], n_batch: int) -> tuple[float, int]:
        """Evaluate the chunks after the head; images through the encoder-output cache. Returns the
        encoder's seconds and how many images reused an earlier encoding."""
        mtmd, start = self.mtmd, int(llm.n_tokens)
        n_past, encoder_s, reused = ctypes.c_int32(start), 0.0, 0
        for i, chunk in enumerate(parts):
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                embd, seconds = self._encoded(llm, chunk)
                encoder_s, reused = encoder_s + seconds, reused + (seconds == 0.0)
                failed = mtmd.mtmd_helper_decode_image_chunk(
                    self.ctx,
                    llm.ctx,
                    chunk,
                    embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                    n_past.value,
                    0,
                    n_batch,
                    ctypes.byref(n_past),
                    mtmd.mtmd_helper_post_decode_callback(),
                    None,
                )  # fmt: skip (no callback: a NULL function pointer)
            else:
                last = i == len(parts) - 1
                failed = mtmd.mtmd_helper_eval_chunk_single(
                    self.ctx, llm.ctx, chunk, n_past.value, 0, n_batch, last, ctypes.byref(n_past)
                )
            if failed:
                raise InvalidInput("llama.cpp failed to evaluate the images")
        llm.input_ids[start : n_past.value] = NOT_A_TOKEN
        llm.n_tokens = n_past.value
        return encoder_s, reused

    def _encoded(self, llm: Any, chunk: Any) -> tuple[np.ndarray[Any, Any], float]:
        """The encoder's output for an image chunk: kept from before for the same pixels (its id is
        their hash), else encoded now. Returns it and the encoder's seconds (0 when reused)."""
        key = self.mtmd.mtmd_input_chunk_get_id(chunk) or b""
        if key and (embd := self._outputs.get(key)) is not None:
            self._outputs.move_to_end(key)
            return embd, 0.0
        started = time.perf_counter()
        if self.mtmd.mtmd_encode_chunk(self.ctx, chunk):
            raise InvalidInput("llama.cpp failed to encode an image")
        size = int(self.mtmd.mtmd_input_chunk_get_n_tokens(chunk)) * int(adapter.n_embd_inp(llm))
        embd = np.ctypeslib.as_array(self.mtmd.mtmd_get_output_embd(self.ctx), shape=(size,)).copy()
        seconds = time.perf_counter() - started
        if key:
            self._outputs[key] = embd
            while sum(e.nbytes for e in self._outputs.values()) > ENCODED_BYTES:
                self._outputs.popitem(last=False)
        return embd, seconds

    @contextlib.contextmanager
    def _bitmaps(self, media: list[bytes]) -> Iterator[list[Any]]:
        made: list[Any] = []
        self.audio_seconds = 0.0
        try:
            for raw in media:
                audio = audio_kind(raw) is not None
                if audio and not self.has_audio:  # mtmd would not even decode it
                    raise InvalidInput(NO_HEARING)
                buf = (ctypes.c_uint8 * len(raw)).from_buffer(bytearray(raw))
                bitmap = self.mtmd.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(raw), False)
                if not bitmap:
                    what = "an audio clip" if audio else "an image"
                    raise InvalidInput(f"{what} could not be decoded")
                made.append(bitmap)
                self._check_modality(bitmap)
                if not audio:  # the image's identity is its pixels: a follow-up reuses their encoding
                    self.mtmd.mtmd_bitmap_set_id(bitmap, self._pixels_id(bitmap))
            yield made
        finally:
            for bitmap in made:
                self.mtmd.mtmd_bitmap_free(bitmap)

    def _pixels_id(self, bitmap: Any) -> bytes:
        mtmd = self.mtmd
        pixels = ctypes.string_at(mtmd.mtmd_bitmap_get_data(bitmap), mtmd.mtmd_bitmap_get_n_bytes(bitmap))
        size = f"{mtmd.mtmd_bitmap_get_nx(bitmap)}x{mtmd.mtmd_bitmap_get_ny(bitmap)}".encode()
        return hashlib.sha256(size + pixels).hexdigest().encode()

    def _check_modality(self, bitmap: Any) -> None:
        """An image needs a projector that sees (a clip's was checked before decoding: mtmd decodes
        audio only for a projector that hears); clips add to audio_seconds."""
        if self.mtmd.mtmd_bitmap_is_audio(bitmap):
            rate = self.mtmd.mtmd_get_audio_sample_rate(self.ctx) or 16000
            self.audio_seconds += self.mtmd.mtmd_bitmap_get_nx(bitmap) / rate
        elif not self.has_vision:
            raise InvalidInput("this model's projector has no vision encoder")

    @contextlib.contextmanager
    def chunks(self) -> Iterator[Any]:
        chunks = self.mtmd.mtmd_input_chunks_init()
        try:
            yield chunks
        finally:
            self.mtmd.mtmd_input_chunks_free(chunks)


def audio_kind(head: bytes) -> str | None:
    """wav, flac or mp3 from a file's first bytes, by mtmd's own rule (mtmd-helper.cpp
    is_audio_file): what its decoder reads as audio; None for anything else (images included:
    a RIFF/WEBP file is an image). The HA side checks audio files with it too."""
    if len(head) < 12:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _too_long(llm: Any, text: str, images: int, needed: int) -> str:
    """Say which part does not fit: the text itself, or the images with it."""
    text_tokens = len(llm.tokenize(text.encode(), add_bos=True, special=True))
    if text_tokens >= llm.n_ctx():
        return f"the prompt alone is {text_tokens} tokens, more than the model's context ({llm.n_ctx()}): shorten it"
    return (
        f"the prompt and its {images} image(s) or clip(s) take {needed} tokens, more than the model's "
        f"context ({llm.n_ctx()}): send fewer or smaller images, or shorter clips"
    )


@contextlib.contextmanager
def parked_text_cache(llm: Any, directory: Path | None) -> Iterator[None]:
    """Save the context's text KV cache to a file, and put it back when the block ends."""
    import llama_cpp  # noqa: PLC0415  (worker-only)

    n = int(llm.n_tokens)
    if n == 0:
        yield
        return
    tokens = llm.input_ids[:n].tolist()
    name = parked_path(directory)
    saved = name is not None and bool(
        llama_cpp.llama_state_seq_save_file(llm.ctx, name.encode(), 0, (llama_cpp.llama_token * n)(*tokens), n)
    )
    try:
        yield
    finally:
        llm.reset()
        adapter.clear_kv(llm)
        if saved and name is not None:
            out, count = (llama_cpp.llama_token * n)(), ctypes.c_size_t(0)
            if llama_cpp.llama_state_seq_load_file(llm.ctx, name.encode(), 0, out, n, ctypes.byref(count)):
                llm.input_ids[:n] = tokens
                llm.n_tokens = n
        if name is not None:
            Path(name).unlink(missing_ok=True)


PARKED = "parked-{pid}.kv"


def parked_path(directory: Path | None) -> str | None:
    """Where this worker parks its text cache: one file per worker process (a crash leaves at most
    that one, removed by the next worker: remove_stale_parked); None when nothing can be written."""
    for folder in (directory, Path(tempfile.gettempdir())):
        if folder is None:
            continue
        path = folder / PARKED.format(pid=os.getpid())
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError:
            continue
        return str(path)
    return None  # read-only everywhere: the text cache is evaluated again after the image


def remove_stale_parked(directory: Path | None) -> None:
    """Parked caches and partial snapshots left by workers that died (their pid is gone)."""
    for folder in (directory, Path(tempfile.gettempdir())):
        if folder is None or not folder.is_dir():
            continue
        for path in [*folder.glob("parked-*.kv"), *folder.glob("state-*.tmp")]:
            pid = path.stem.removeprefix("parked-")
            if path.suffix == ".kv" and pid.isdigit() and alive(int(pid)):
                continue
            if path.suffix == ".tmp" and _recent(path):  # another worker may be writing it now
                continue
            with contextlib.suppress(OSError):
                path.unlink()


def _recent(path: Path, seconds: float = 60.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False
