"""Audio embeddings as llama.cpp's mtmd computes them, one row per audio token, for the hearing tests.

    python tests/mtmd_audio_embed.py MODEL.gguf MMPROJ.gguf OUT.npz CLIP.wav [CLIP.wav ...]

Runs llama-cpp-python's own mtmd bindings in a process of its own, so the library it loads can be
chosen (MTMD_CPP_LIB and LLAMA_CPP_LIB_PATH: e.g. an unpatched build, to see the old preprocessing
fail the same comparison). Each clip is tokenized with one media marker; every audio chunk is
encoded and its output rows kept, in order.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
import sys
from typing import Any

import numpy as np


def embeddings(model: Path, mmproj: Path, clips: list[Path]) -> dict[str, np.ndarray]:
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    llm = llama_cpp.Llama(str(model), n_ctx=256, verbose=False)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.print_timings, params.n_threads = False, False, 2
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
    assert ctx, "the projector did not load"
    n_embd = llm.n_embd()
    out = {}
    try:
        for clip in clips:
            out[clip.name] = _clip(mtmd, ctx, clip.read_bytes(), n_embd)
    finally:
        mtmd.mtmd_free(ctx)
        llm.close()
    return out


def _clip(mtmd: Any, ctx: Any, raw: bytes, n_embd: int) -> np.ndarray:
    buf = (ctypes.c_uint8 * len(raw)).from_buffer(bytearray(raw))
    bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(raw), False)
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        prompt = mtmd.mtmd_input_text()
        text = mtmd.mtmd_default_marker()
        prompt.text, prompt.text_len, prompt.add_special, prompt.parse_special = text, len(text), False, True
        array = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(prompt), array, 1) == 0
        rows = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO:
                continue
            n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            assert mtmd.mtmd_encode_chunk(ctx, chunk) == 0
            embd = mtmd.mtmd_get_output_embd(ctx)
            rows.append(np.ctypeslib.as_array(embd, shape=(n * n_embd,)).reshape(n, n_embd).copy())
        return np.concatenate(rows)
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)


if __name__ == "__main__":
    found = embeddings(Path(sys.argv[1]), Path(sys.argv[2]), [Path(p) for p in sys.argv[4:]])
    np.savez(sys.argv[3], **found)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
