"""The one module that touches llama-cpp-python's private names, checked against the version it was
written for.

The worker needs what `Llama` does not expose: weight repacking (`use_extra_bufts`, only in the
low-level model params), a sampler built the way `Llama.generate` builds it, decoding a drafted batch
with logits for every token, dropping a KV-cache suffix for prefix reuse, and the vocabulary's
end-of-generation test. They live on `Llama._ctx`, `Llama._batch`, `Llama._model` and
`Llama._init_sampler`, which any release may change: so the import refuses another version with a
clear BackendMissing (the repair says to install this one) instead of failing somewhere mid-answer.
"""

from __future__ import annotations

from typing import Any

from ...errors import BackendMissing

LLAMA_CPP_VERSION = WRITTEN_FOR = "0.3.36"  # llama-cpp-python: requirements.txt pins it, the flow installs it


def import_llama_cpp() -> Any:
    """llama_cpp, once it is the version this module was written for."""
    try:
        import llama_cpp  # noqa: PLC0415  (imported only in the worker, on demand)
    except (ImportError, OSError) as err:  # OSError: the native library itself does not load
        raise BackendMissing(f"llama-cpp-python is not usable: {err}") from err
    check_version(str(getattr(llama_cpp, "__version__", "?")))
    return llama_cpp


def check_version(version: str) -> None:
    """A local build label (`0.3.36+cuda`) is the same release; any other release is refused."""
    if version.split("+", 1)[0] != WRITTEN_FOR:
        raise BackendMissing(
            f"llama-cpp-python {version} is installed; Sarai Omni's worker is written for {WRITTEN_FOR} "
            f"(it uses that release's internals): install llama-cpp-python=={WRITTEN_FOR}"
        )


def model_params(llama_cpp: Any, *, repack: bool, n_gpu_layers: int) -> Any:
    """The low-level model parameters of a load (a voice's, which has no Llama object)."""
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = repack
    params.n_gpu_layers = n_gpu_layers
    return params


def new_llama(llama_cpp: Any, *, repack: bool, **kwargs: Any) -> Any:
    """`Llama(**kwargs)`; `repack: False` keeps the weights only in the mmap'd file (no second copy).

    Llama() reads its model defaults from the low-level module and has no argument for
    `use_extra_bufts`, so the defaults function is swapped while it is built (one worker, one load).
    """
    low = llama_cpp.llama_cpp
    default_params = low.llama_model_default_params

    def model_params() -> Any:
        params = default_params()
        params.use_extra_bufts = repack
        return params

    low.llama_model_default_params = model_params
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        low.llama_model_default_params = default_params


def new_sampler(llm: Any, **settings: Any) -> Any:
    """The sampler chain `Llama.generate` would build from these settings (grammar included)."""
    return llm._init_sampler(**settings)


def sample(sampler: Any, llm: Any, index: int) -> int:
    """The next token from the logits at batch position `index` (-1: the last)."""
    return int(sampler.sample(llm._ctx, index))


def keep_prefix(llm: Any, n_tokens: int) -> bool:
    """Drop the KV cache after the first `n_tokens`; False where this cache cannot drop a suffix."""
    return bool(llm._ctx.kv_cache_seq_rm(-1, n_tokens, -1))


def n_embd_inp(llm: Any) -> int:
    """The width of the model's input embeddings (what a projector's output rows are)."""
    return int(import_llama_cpp().llama_model_n_embd_inp(llm.model))


def clear_kv(llm: Any) -> None:
    llm._ctx.kv_cache_clear()


def decode_batch(llm: Any, batch: list[int], n_past: int) -> None:
    """Evaluate `batch` after `n_past` tokens, keeping the logits of every position (draft checking)."""
    llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
    llm._ctx.decode(llm._batch)


def is_end_of_generation(llama_cpp: Any, llm: Any, token: int) -> bool:
    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token))
