"""The one memory estimator: what a role's model will hold once loaded, from its files' headers and
how it runs. The pool decides loads with it; the config flow shows and checks the same numbers.

GGUF: tensor bytes (x2 with weight repacking: a second copy beside the mmap'd file) + the KV cache
of n_ctx + the compute buffer + the worker's own runtime (+ the projector). Layers offloaded to a GPU
keep their weights and KV cache there; the token embeddings stay on the CPU. A model folder:
hf.estimate_bytes (weights per dtype/quantization, KV, speech, torch runtime). A server's model: 0.
"""

from __future__ import annotations

from .. import defaults
from ..files import ModelFiles
from ..gguf import GGUFInfo
from ..spec import FolderModel, LoadVariant, ModelSpec, RemoteModel, Runtime

MB = 2**20
# Python + llama_cpp + numpy in the worker before any model (measured ~60 MB), with headroom.
WORKER_RUNTIME_BYTES = 96 * MB
# A Qwen3-TTS projector's compute buffers as llama.cpp reserves them (measured at the 0.6B and 1.7B
# shapes, which share the 12 Hz decoder): code2wav for a 72-frame window, the speaker encoder.
CODE2WAV_BYTES, SPEAKER_ENCODER_BYTES = 869 * MB, 141 * MB
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 values in 34 bytes


def estimate_bytes(spec: ModelSpec, files: ModelFiles, variant: LoadVariant | None = None) -> int:
    """Resident (CPU) memory of `spec`'s model loaded the `variant` way (default: the spec's, else plain)."""
    source = spec.source
    if isinstance(source, RemoteModel):
        return 0
    if isinstance(source, FolderModel):
        assert files.folder is not None
        return files.folder.estimate_bytes(source.dtype, spec.runtime.n_ctx, source.quantization)
    assert files.gguf is not None
    repack = (variant or spec.variant or LoadVariant()).repack
    return gguf_bytes(files.gguf, spec.runtime, files.mmproj, repack=repack)


def gguf_bytes(info: GGUFInfo, runtime: Runtime, mmproj: GGUFInfo | None = None, *, repack: bool = False) -> int:
    gpu = gpu_fraction(info, runtime.n_gpu_layers)
    embd, vocab = info.embedding_length or 0, int(info.metadata.get("tokenizer.ggml.tokens", 0) or 0)
    embedding_share = min(vocab * embd / info.parameter_count, 1.0) if info.parameter_count else 0.0
    weights = info.tensor_bytes * (1 - gpu * (1 - embedding_share))
    weights *= 2 if repack else 1
    kv = runtime.n_ctx * info.kv_bytes_per_token(KV_TYPE_BYTES.get(runtime.kv_type, 2.0)) * (1 - gpu)
    # CPU compute buffer: activations of one batch plus the logits row of the vocabulary.
    compute = 4 * runtime.n_batch * embd * 8 + 4 * vocab * 2
    if info.speaks:  # every position's logits (compute and output buffers), code2wav, the speaker encoder,
        # and the F32 copy of the token embeddings mtmd's audio generation builds its prompts from
        projector_compute = CODE2WAV_BYTES + SPEAKER_ENCODER_BYTES if mmproj else 0
        compute = 4 * defaults.VOICE_BATCH * (embd * 8 + vocab * 2) + projector_compute + 4 * vocab * embd
    projector = (0 if gpu else mmproj.tensor_bytes) + 64 * MB if mmproj else 0
    return int(weights + kv + compute + projector + WORKER_RUNTIME_BYTES)


def gpu_fraction(info: GGUFInfo, n_gpu_layers: int) -> float:
    """Share of the repeating layers on the GPU (-1: all of them)."""
    layers = info.block_count or 0
    if n_gpu_layers == 0 or layers == 0:
        return 0.0
    return 1.0 if n_gpu_layers < 0 else min(n_gpu_layers, layers) / layers
