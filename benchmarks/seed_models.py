"""Random-weight GGUFs with the seed models' exact shapes, so speed and memory are those of the seeds.

- `qwen3vl-4b`: Qwen3-VL-4B-Instruct's text tower (`qwen3vl`: qwen3 blocks with q/k norms, 36 layers,
  2560 wide, 9728 FFN, 32/8 heads of 128, tied embeddings, 151,936 tokens, M-RoPE [24, 20, 20],
  3 deepstack layers) and its projector (`qwen3vl_merger`: 24 blocks of 1024, 16 px patches, 2,304
  learned positions, deepstack at 5, 11, 17).
- `omni-7b`: Qwen2.5-Omni-7B's thinker (`qwen2vl`: qwen2 with q/k/v bias, 28 layers, 3584 wide,
  18944 FFN, 28/4 heads, 152,064 tokens, M-RoPE [16, 24, 24]) and its projector (`qwen2.5o`: the
  Qwen2.5-VL vision tower, 32 blocks of 1280 with windowed attention, and the Whisper-large-shaped
  audio tower, 32 blocks of 1280).

The text towers are written as F16 one tensor at a time (never all in memory), then quantized to
Q4_K_M by llama.cpp's own quantizer (`llama_model_quantize`, ftype 15); projectors are F16 as the
converter writes them. Random weights: the text is noise, the arithmetic is the seeds'. Files are
cached in ~/.cache/sarai_omni/seed-shapes (outside the clone) and never committed.

    .venv/bin/python benchmarks/seed_models.py [--only qwen3vl-4b|omni-7b]
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
import heapq
from itertools import pairwise
import json
import os
from pathlib import Path
import sys
import time

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.tiny_models import (  # noqa: E402
    CHATML_TEMPLATE,
    SPECIAL_TOKENS,
    USER_TOKENS,
    OmniVisionShape,
    Qwen3VisionShape,
    Shape,
    _byte_tokens,
    mrope_sections,
    write_omni_mmproj,
    write_qwen3vl_mmproj,
)

CACHE = Path(os.environ.get("SARAI_SEED_SHAPES", Path.home() / ".cache" / "sarai_omni" / "seed-shapes"))
VERSION = 1  # bump when the layout written here changes: the cached files are made again
Q4_K_M = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M


@dataclass(frozen=True)
class TextTower:
    arch: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    rope_base: float
    mrope: tuple[int, int, int]
    tied: bool
    deepstack: int = 0
    head_dim: int = 128


@dataclass(frozen=True)
class Seed:
    name: str
    text: TextTower
    context_length: int

    @property
    def model(self) -> Path:
        return CACHE / f"{self.name}-shape-v{VERSION}-q4_k_m.gguf"

    @property
    def mmproj(self) -> Path:
        return CACHE / f"{self.name}-shape-v{VERSION}-mmproj-f16.gguf"


SEEDS = {
    "qwen3vl-4b": Seed(
        "qwen3vl-4b",
        TextTower("qwen3vl", 36, 2560, 9728, 32, 8, 151936, 5_000_000.0, (24, 20, 20), tied=True, deepstack=3),
        262144,
    ),
    "omni-7b": Seed(
        "omni-7b", TextTower("qwen2vl", 28, 3584, 18944, 28, 4, 152064, 1_000_000.0, (16, 24, 24), tied=False), 32768
    ),
}
QWEN3VL_4B_VISION = Qwen3VisionShape(
    n_embd=1024, n_head=16, n_ff=4096, n_layer=24, patch_size=16, n_positions=2304, deepstack=(5, 11, 17)
)
OMNI_7B_VISION = OmniVisionShape(
    n_embd=1280,
    n_head=16,
    n_ff=3420,
    n_layer=32,
    fullatt_block_indexes=(7, 15, 23, 31),
    audio=Shape(n_embd=1280, n_head=20, n_head_kv=20, n_layer=32, n_ff=5120),
)


# Qwen2's pre-tokenizer (llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2): what BPE merges apply within.
QWEN2_SPLIT = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_MERGES = 12000


def corpus_words() -> Counter[str]:
    """Byte-level words of Home Assistant's own English strings (every integration's strings.json):
    the names, states and phrases an Assist prompt is made of."""
    import homeassistant.components
    import regex  # type: ignore[import-untyped]

    table = _byte_tokens()
    split = regex.compile(QWEN2_SPLIT)
    words: Counter[str] = Counter()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, str):
            for piece in split.findall(node):
                words["".join(table[b] for b in piece.encode())] += 1

    for path in Path(homeassistant.components.__file__).parent.glob("*/strings.json"):
        walk(json.loads(path.read_text()))
    return words


def train_merges(words: Counter[str], n_merges: int = N_MERGES) -> list[tuple[str, str]]:
    """Byte-pair encoding merges, most frequent pair first: with them the seed shapes tokenize
    English at about the chars per token of Qwen's tokenizer, so a standing prompt has the seeds'
    token count instead of one token per byte."""
    return _BPE(words).train(n_merges)


class _BPE:
    """Pair counts over the distinct words, a heap of them with lazily refreshed counts."""

    def __init__(self, words: Counter[str]) -> None:
        self.symbols = [list(w) for w in words]
        self.freq = list(words.values())
        self.counts: Counter[tuple[str, str]] = Counter()
        self.where: dict[tuple[str, str], set[int]] = {}
        for i, sym in enumerate(self.symbols):
            self._add(i, sym)
        self.heap = [(-c, pair) for pair, c in self.counts.items()]
        heapq.heapify(self.heap)

    def _add(self, i: int, sym: list[str]) -> None:
        for pair in pairwise(sym):
            self.counts[pair] += self.freq[i]
            self.where.setdefault(pair, set()).add(i)

    def train(self, n_merges: int) -> list[tuple[str, str]]:
        merges: list[tuple[str, str]] = []
        while self.heap and len(merges) < n_merges:
            neg, pair = heapq.heappop(self.heap)
            count = self.counts.get(pair, 0)
            if -neg != count:  # stale: push the fresh count back
                if count > 0:
                    heapq.heappush(self.heap, (-count, pair))
                continue
            merges.append(pair)
            for i in list(self.where.pop(pair, ())):
                self._merge(i, pair)
            self.counts.pop(pair, None)
        return merges

    def _merge(self, i: int, pair: tuple[str, str]) -> None:
        sym = self.symbols[i]
        for old in pairwise(sym):
            self.counts[old] -= self.freq[i]
        merged, j = [], 0
        while j < len(sym):
            if j + 1 < len(sym) and (sym[j], sym[j + 1]) == pair:
                merged.append(sym[j] + sym[j + 1])
                j += 2
            else:
                merged.append(sym[j])
                j += 1
        self.symbols[i] = merged
        self._add(i, merged)
        for new in pairwise(merged):
            heapq.heappush(self.heap, (-self.counts[new], new))


def bpe_vocabulary() -> tuple[list[str], list[int], list[str]]:
    """(tokens, types, merges): bytes, the trained merges, then ChatML's control tokens."""
    merges = train_merges(corpus_words())
    tokens = _byte_tokens()
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    types = [int(gguf.TokenType.NORMAL)] * len(tokens)
    tokens += list(SPECIAL_TOKENS) + list(USER_TOKENS)
    types += [int(gguf.TokenType.CONTROL)] * len(SPECIAL_TOKENS) + [int(gguf.TokenType.USER_DEFINED)] * len(USER_TOKENS)
    return tokens, types, [f"{a} {b}" for a, b in merges]


class _Pool:
    """Random F16 values, cut from one 64 Mi-value pool: generating billions of normals would take
    longer than quantizing them, and the quantizer's work does not depend on which values it sees."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.values = (rng.standard_normal(1 << 26, dtype=np.float32) * np.float32(0.02)).astype(np.float16)
        self.offset = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        start = self.offset % 4096
        self.offset += 1
        return np.resize(self.values[start:], n).reshape(shape)


def _tensors(t: TextTower) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, numpy shape, is a matrix) of the text tower, in the converter's order."""
    q, kv = t.n_head * t.head_dim, t.n_head_kv * t.head_dim
    out: list[tuple[str, tuple[int, ...], bool]] = [("token_embd.weight", (t.n_vocab, t.n_embd), True)]
    for i in range(t.n_layer):
        b = f"blk.{i}"
        out += [(f"{b}.attn_norm.weight", (t.n_embd,), False)]
        out += [(f"{b}.attn_q.weight", (q, t.n_embd), True), (f"{b}.attn_k.weight", (kv, t.n_embd), True)]
        out += [(f"{b}.attn_v.weight", (kv, t.n_embd), True), (f"{b}.attn_output.weight", (t.n_embd, q), True)]
        if t.arch == "qwen2vl":
            out += [(f"{b}.attn_q.bias", (q,), False), (f"{b}.attn_k.bias", (kv,), False)]
            out += [(f"{b}.attn_v.bias", (kv,), False)]
        else:
            out += [(f"{b}.attn_q_norm.weight", (t.head_dim,), False)]
            out += [(f"{b}.attn_k_norm.weight", (t.head_dim,), False)]
        out += [(f"{b}.ffn_norm.weight", (t.n_embd,), False), (f"{b}.ffn_gate.weight", (t.n_ff, t.n_embd), True)]
        out += [(f"{b}.ffn_up.weight", (t.n_ff, t.n_embd), True), (f"{b}.ffn_down.weight", (t.n_embd, t.n_ff), True)]
    out += [("output_norm.weight", (t.n_embd,), False)]
    if not t.tied:
        out += [("output.weight", (t.n_vocab, t.n_embd), True)]
    return out


def _keys(w: gguf.GGUFWriter, seed: Seed) -> None:
    t = seed.text
    w.add_name(f"{seed.name}-shape (random weights)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(seed.context_length)
    w.add_embedding_length(t.n_embd)
    w.add_block_count(t.n_layer)
    w.add_feed_forward_length(t.n_ff)
    w.add_head_count(t.n_head)
    w.add_head_count_kv(t.n_head_kv)
    w.add_key_length(t.head_dim)
    w.add_value_length(t.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(t.rope_base)
    w.add_rope_dimension_sections(mrope_sections(t.head_dim, t.mrope))
    if t.deepstack:
        w.add_uint32(f"{t.arch}.n_deepstack_layers", t.deepstack)
    tokens, types, merges = bpe_vocabulary()
    pad = t.n_vocab - len(tokens)  # the seeds' vocabulary size, so embeddings and output are theirs
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens + [f"<|unused_{i}|>" for i in range(pad)])
    w.add_token_types(types + [int(gguf.TokenType.UNUSED)] * pad)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)


def write_f16(seed: Seed, path: Path) -> None:
    """Stream the text tower to `path` as F16 (norms and biases F32)."""
    tensors = _tensors(seed.text)
    w = gguf.GGUFWriter(str(path), seed.text.arch)
    _keys(w, seed)
    for name, shape, matrix in tensors:
        dtype = np.dtype(np.float16 if matrix else np.float32)
        w.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    pool = _Pool(1)
    for name, shape, matrix in tensors:
        if matrix:
            w.write_tensor_data(pool.take(shape))
        elif name.endswith(".bias"):
            w.write_tensor_data(pool.take(shape).astype(np.float32))
        else:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
    w.close()


def quantize(source: Path, target: Path, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = Q4_K_M
    params.nthread = threads
    tmp = target.with_suffix(".part")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {source}")
    tmp.replace(target)


def write_mmproj(seed: Seed, path: Path) -> None:
    tmp = path.with_suffix(".part")
    if seed.name == "qwen3vl-4b":
        write_qwen3vl_mmproj(tmp, seed.text.n_embd, shape=QWEN3VL_4B_VISION, weights=np.float16)
    else:
        write_omni_mmproj(tmp, seed.text.n_embd, shape=OMNI_7B_VISION, weights=np.float16)
    tmp.replace(path)


def ensure(name: str, threads: int = os.cpu_count() or 2) -> Seed:
    """The seed-shaped model and projector, made once and cached."""
    seed = SEEDS[name]
    CACHE.mkdir(parents=True, exist_ok=True)
    if not seed.model.is_file():
        f16 = seed.model.with_name(f"{seed.name}-shape-v{VERSION}-f16.gguf")
        started = time.perf_counter()
        write_f16(seed, f16)
        written = time.perf_counter()
        quantize(f16, seed.model, threads)
        f16.unlink()
        _log(name, "text", written - started, time.perf_counter() - written, seed.model)
    if not seed.mmproj.is_file():
        started = time.perf_counter()
        write_mmproj(seed, seed.mmproj)
        _log(name, "mmproj", time.perf_counter() - started, 0.0, seed.mmproj)
    return seed


def _log(name: str, part: str, write_s: float, quant_s: float, path: Path) -> None:
    size = path.stat().st_size / 1e9
    print(
        json.dumps(
            {
                "seed": name,
                "part": part,
                "write_s": round(write_s, 1),
                "quantize_s": round(quant_s, 1),
                "gb": round(size, 3),
            }
        ),
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SEEDS))
    args = parser.parse_args()
    for name in [args.only] if args.only else list(SEEDS):
        seed = ensure(name)
        print(json.dumps({"seed": name, "model": str(seed.model), "mmproj": str(seed.mmproj)}))


if __name__ == "__main__":
    main()
