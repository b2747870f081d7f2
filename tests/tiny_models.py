"""Write tiny random-weight GGUF models that llama.cpp really loads and runs.

qwen2 / qwen3 text models with a byte-level BPE tokenizer and a ChatML (Qwen2.5-style, with tools)
chat template, a few hundred KB each. Random weights: speed, memory and plumbing are real, the text
is not; tests that need exact text force it with a grammar.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
from pathlib import Path
from typing import Any

import gguf
import numpy as np

# Qwen2.5's chat template (tools section included), as shipped in its tokenizer_config.json.
CHATML_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are a helpful assistant.' }}\n"
    '    {%- endif %}\n    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user '
    'query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    '    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n'
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": '
    '<args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n{%- else %}\n'
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- endif %}\n"
    "{%- endif %}\n{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    '            {{- \'\\n<tool_call>\\n{"name": "\' }}\n            {{- tool_call.name }}\n'
    '            {{- \'", "arguments": \' }}\n            {{- tool_call.arguments | tojson }}\n'
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)

# A Qwen2-VL-style ChatML whose contents may be lists of parts: what servers that put media markers
# into text parts (llama-cpp-python's mtmd chat handler) render. No tools section.
VL_TEMPLATE = (
    "{%- for message in messages %}<|im_start|>{{ message.role }}\n"
    "{%- if message.content is string %}{{ message.content }}"
    "{%- else %}{%- for part in message.content %}{%- if part.type == 'text' %}{{ part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
USER_TOKENS = ("<tool_call>", "</tool_call>")
MERGES = (("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("o", "n"), ("Ġt", "he"))


def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: every byte is one printable token."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) of the tiny byte-level BPE tokenizer."""
    tokens = _byte_tokens() + ["".join(m) for m in MERGES]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += list(SPECIAL_TOKENS) + list(USER_TOKENS)
    types += [gguf.TokenType.CONTROL] * len(SPECIAL_TOKENS) + [gguf.TokenType.USER_DEFINED] * len(USER_TOKENS)
    return tokens, [int(t) for t in types], [f"{a} {b}" for a, b in MERGES]


@dataclass(frozen=True)
class Shape:
    """Dimensions of a tiny transformer."""

    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_layer: int = 2
    n_ff: int = 128

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def write_text_model(
    path: Path,
    arch: str = "qwen2",
    *,
    shape: Shape = Shape(),
    context_length: int = 32768,
    chat_template: str | None = CHATML_TEMPLATE,
    seed: int = 0,
) -> Path:
    """Write a tiny qwen2/qwen3 GGUF with random F32 weights."""
    w = gguf.GGUFWriter(str(path), arch)
    _add_header(w, arch, shape, context_length)
    n_vocab = _add_tokenizer(w, chat_template)
    _add_tensors(w, np.random.default_rng(seed), arch, shape, n_vocab)
    _finish(w)
    return path


def _add_header(w: gguf.GGUFWriter, arch: str, shape: Shape, context_length: int = 32768) -> None:
    w.add_name(f"tiny-{arch}")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(context_length)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    if arch in ("qwen3", "qwen3vl"):
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
    if arch == "qwen3vl":  # Qwen3-VL's text: qwen3 with interleaved M-RoPE and deepstack inputs
        w.add_rope_dimension_sections(mrope_sections(shape.head_dim, (24, 20, 20)))
        w.add_uint32(f"{arch}.n_deepstack_layers", len(QWEN3VL_DEEPSTACK))
    if arch == "qwen2vl":  # Qwen2.5-Omni's thinker: qwen2 with M-RoPE over (time, height, width)
        w.add_rope_dimension_sections(mrope_sections(shape.head_dim))


def mrope_sections(head_dim: int, seed: tuple[int, int, int] = (16, 24, 24)) -> list[int]:
    """The seed's M-RoPE sections of a 128-wide head (Omni [16, 24, 24], Qwen3-VL [24, 20, 20]) scaled
    to `head_dim`, padded to 4 as the converter writes."""
    half = head_dim // 2
    t = half * seed[0] // 64
    return [t, (half - t) // 2, half - t - (half - t) // 2, 0]


def _add_tokenizer(
    w: gguf.GGUFWriter, chat_template: str | None, vocab: tuple[list[str], list[int], list[str]] | None = None
) -> int:
    tokens, types, merges = vocab or vocabulary()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    return len(tokens)


def _add_tensors(
    w: gguf.GGUFWriter, rng: np.random.Generator, arch: str, shape: Shape, n_vocab: int,
    *, fixed: dict[str, np.ndarray] | None = None,
) -> None:  # fmt: skip
    def tensor(name: str, *dims: int, scale: float = 0.02) -> None:
        value = (rng.standard_normal(dims) * scale).astype(np.float32)
        if fixed is not None and (name in fixed or name.endswith(("attn_output.weight", "ffn_down.weight"))):
            value = fixed.get(name, np.zeros_like(value))  # a fixed model's blocks add nothing
        w.add_tensor(name, value)

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    embd, q_dim, kv_dim = shape.n_embd, shape.n_head * shape.head_dim, shape.n_head_kv * shape.head_dim
    tensor("token_embd.weight", n_vocab, embd, scale=1.0)
    ones("output_norm.weight", embd)
    tensor("output.weight", n_vocab, embd, scale=0.5)
    for i in range(shape.n_layer):
        b = f"blk.{i}"
        ones(f"{b}.attn_norm.weight", embd)
        tensor(f"{b}.attn_q.weight", q_dim, embd)
        tensor(f"{b}.attn_k.weight", kv_dim, embd)
        tensor(f"{b}.attn_v.weight", kv_dim, embd)
        tensor(f"{b}.attn_output.weight", embd, q_dim)
        if arch in ("qwen2", "qwen2vl"):  # q/k/v bias; qwen3 and qwen3vl norm q and k instead
            tensor(f"{b}.attn_q.bias", q_dim)
            tensor(f"{b}.attn_k.bias", kv_dim)
            tensor(f"{b}.attn_v.bias", kv_dim)
        else:
            ones(f"{b}.attn_q_norm.weight", shape.head_dim)
            ones(f"{b}.attn_k_norm.weight", shape.head_dim)
        ones(f"{b}.ffn_norm.weight", embd)
        tensor(f"{b}.ffn_gate.weight", shape.n_ff, embd)
        tensor(f"{b}.ffn_up.weight", shape.n_ff, embd)
        tensor(f"{b}.ffn_down.weight", embd, shape.n_ff)


class _Clip:
    """A projector GGUF (general.architecture "clip") being written: its keys and random tensors."""

    def __init__(
        self, path: Path, name: str, projector: str, seed: int, *, audio: bool = False, weights: Any = np.float32
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.weights = weights  # dtype of matrices and convolutions (the converter's F16 at the seeds' scale)
        self.w = gguf.GGUFWriter(str(path), "clip")
        self.w.add_name(name)
        self.w.add_file_type(gguf.LlamaFileType.ALL_F32)
        self.w.add_bool("clip.has_vision_encoder", True)
        self.w.add_bool("clip.has_audio_encoder", audio)
        self.w.add_string("clip.projector_type", projector)

    def keys(self, section: str, eps: float, values: dict[str, int]) -> None:
        for key, value in values.items():
            self.w.add_uint32(f"clip.{section}.{key}", value)
        self.w.add_float32(f"clip.{section}.attention.layer_norm_epsilon", eps)

    def image_norm(self, mean: list[float], std: list[float]) -> None:
        self.w.add_array("clip.vision.image_mean", mean)
        self.w.add_array("clip.vision.image_std", std)

    def tensor(self, name: str, *dims: int, dtype: Any = None) -> None:
        """Random values; vectors (norms, biases) stay F32 as the converter keeps them."""
        dtype = dtype or (self.weights if len(dims) > 1 and min(dims) > 1 else np.float32)
        data = self.rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)
        self.w.add_tensor(name, data.astype(dtype))

    def linear(self, name: str, rows: int, cols: int, bias: bool = True) -> None:
        self.tensor(f"{name}.weight", rows, cols)
        if bias:
            self.tensor(f"{name}.bias", rows)

    def norm(self, name: str, n: int, bias: bool = True) -> None:
        self.w.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        if bias:
            self.w.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    def finish(self) -> None:
        _finish(self.w)


@dataclass(frozen=True)
class OmniVisionShape:
    """A tiny Qwen2.5-VL vision tower (Omni's): 14 px patches, 2x2 merge, windowed attention."""

    n_embd: int = 32
    n_head: int = 2
    n_ff: int = 64
    n_layer: int = 2
    fullatt_block_indexes: tuple[int, ...] = (1,)  # every 2nd block attends fully (Omni: 7, 15, 23, 31)
    patch_size: int = 14
    image_size: int = 560  # the converter's default for Qwen2-VL/2.5-VL
    audio: Shape | None = None  # the audio tower (Omni's: 1280 wide, 20 heads, 5120, 32 blocks); None: as vision


def write_omni_mmproj(
    path: Path,
    text_embd: int = 64,
    *,
    shape: OmniVisionShape = OmniVisionShape(),
    seed: int = 11,
    weights: Any = np.float32,
) -> Path:
    """Write a tiny Qwen2.5-Omni projector as llama.cpp's converter does (conversion/qwenvl.py,
    Qwen25OmniModel): `clip.projector_type` "qwen2.5o" with a vision and an audio encoder.

    Vision (mtmd reads it as qwen2.5vl): the Conv3D patch embedding split into two Conv2Ds
    (`v.patch_embd.weight`, `.weight.1`), no position embeddings (M-RoPE), RMS-normed blocks with
    SwiGLU MLPs and biased q/k/v/out, the merger's ln_q as `v.post_ln`, its MLP as mm.0 / mm.2 over
    2x2 merged patches. Audio: Whisper's encoder with sinusoidal positions and Qwen2-Audio's linear
    projector (mtmd reads it as qwen2a), conv weights F16 as the converter forces.
    """
    clip = _Clip(path, "tiny-qwen2.5-omni-mmproj", "qwen2.5o", seed, audio=True, weights=weights)
    clip.w.add_bool("clip.use_silu", True)
    embd, p = shape.n_embd, shape.patch_size
    clip.keys(
        "vision",
        1e-6,
        _vision_keys(shape.n_embd, shape.n_ff, shape.n_layer, shape.n_head, text_embd)
        | {"image_size": shape.image_size, "patch_size": p, "n_wa_pattern": shape.fullatt_block_indexes[0] + 1},
    )
    clip.image_norm([0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711])
    clip.tensor("v.patch_embd.weight", embd, 3, p, p)
    clip.tensor("v.patch_embd.weight.1", embd, 3, p, p)
    for i in range(shape.n_layer):
        b = f"v.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            clip.linear(f"{b}.{part}", embd, embd)
        clip.norm(f"{b}.ln1", embd, bias=False)  # RMSNorm: no bias
        clip.norm(f"{b}.ln2", embd, bias=False)
        clip.linear(f"{b}.ffn_gate", shape.n_ff, embd)
        clip.linear(f"{b}.ffn_up", shape.n_ff, embd)
        clip.linear(f"{b}.ffn_down", embd, shape.n_ff)
    clip.norm("v.post_ln", embd, bias=False)  # the merger's ln_q
    _merger(clip, embd * 4, embd * 4, text_embd)
    _audio_encoder(clip, text_embd, shape)
    clip.finish()
    return path


def _vision_keys(n_embd: int, n_ff: int, n_layer: int, n_head: int, text_embd: int) -> dict[str, int]:
    return {
        "embedding_length": n_embd,
        "feed_forward_length": n_ff,
        "block_count": n_layer,
        "projection_dim": text_embd,
        "attention.head_count": n_head,
    }


def _merger(clip: _Clip, width: int, hidden: int, text_embd: int) -> None:
    """The projector's MLP to the text model's width (mm.0, GELU, mm.2), as LLaVA and Qwen-VL name it."""
    clip.linear("mm.0", hidden, width)
    clip.linear("mm.2", text_embd, hidden)


QWEN3VL_DEEPSTACK = (0, 1)  # vision blocks whose features also feed the text model (4B: 5, 11, 17)


@dataclass(frozen=True)
class Qwen3VisionShape:
    """A tiny Qwen3-VL vision tower: 16 px patches, learned positions, 2x2 merge, deepstack."""

    n_embd: int = 32
    n_head: int = 2
    n_ff: int = 64
    n_layer: int = 3
    patch_size: int = 16
    n_positions: int = 64  # the 4B's 2304 = 48x48
    deepstack: tuple[int, ...] = QWEN3VL_DEEPSTACK


def write_qwen3vl_mmproj(
    path: Path,
    text_embd: int = 64,
    *,
    shape: Qwen3VisionShape = Qwen3VisionShape(),
    seed: int = 13,
    weights: Any = np.float32,
) -> Path:
    """Write a tiny Qwen3-VL projector as llama.cpp's converter does (conversion/qwen3vl.py,
    Qwen3VLVisionModel): `clip.projector_type` "qwen3vl_merger".

    The Conv3D patch embedding split in two with its bias, learned positions (interpolated by mtmd),
    LayerNorm blocks with a fused qkv and GELU MLPs, the merger (`v.post_ln`, mm.0 / mm.2) and a
    deepstack merger per deepstack block (`v.deepstack.N.*`); the output is text_embd x (1 +
    deepstack layers) wide.
    """
    clip = _Clip(path, "tiny-qwen3-vl-mmproj", "qwen3vl_merger", seed, weights=weights)
    clip.w.add_bool("clip.use_gelu", True)
    embd, p, merged = shape.n_embd, shape.patch_size, shape.n_embd * 4
    side = int(shape.n_positions**0.5)
    clip.keys(
        "vision",
        1e-6,
        _vision_keys(embd, shape.n_ff, shape.n_layer, shape.n_head, text_embd)
        | {"image_size": side * p, "patch_size": p, "spatial_merge_size": 2},
    )
    clip.image_norm([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    clip.w.add_array("clip.vision.is_deepstack_layers", [i in shape.deepstack for i in range(shape.n_layer)])
    clip.tensor("v.patch_embd.weight", embd, 3, p, p)
    clip.tensor("v.patch_embd.weight.1", embd, 3, p, p)
    clip.tensor("v.patch_embd.bias", embd)
    clip.tensor("v.position_embd.weight", shape.n_positions, embd, dtype=np.float32)  # the converter keeps F32
    for i in range(shape.n_layer):
        b = f"v.blk.{i}"
        clip.linear(f"{b}.attn_qkv", 3 * embd, embd)  # Qwen3-VL's fused qkv, kept fused by the converter
        clip.linear(f"{b}.attn_out", embd, embd)
        clip.norm(f"{b}.ln1", embd)
        clip.norm(f"{b}.ln2", embd)
        clip.linear(f"{b}.ffn_up", shape.n_ff, embd)
        clip.linear(f"{b}.ffn_down", embd, shape.n_ff)
        if i in shape.deepstack:
            clip.norm(f"v.deepstack.{i}.norm", merged)
            clip.linear(f"v.deepstack.{i}.fc1", merged, merged)
            clip.linear(f"v.deepstack.{i}.fc2", text_embd, merged)
    clip.norm("v.post_ln", embd)
    _merger(clip, merged, merged, text_embd)
    clip.finish()
    return path


def _sinusoids(length: int, channels: int) -> np.ndarray[Any, Any]:
    """Whisper's SinusoidsPositionEmbedding (what the converter generates for Omni's audio tower)."""
    increment = np.log(10000) / (channels // 2 - 1)
    inv = np.exp(-increment * np.arange(channels // 2))
    scaled = np.arange(length)[:, None] * inv[None, :]
    table: np.ndarray[Any, Any] = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)
    return table


N_MEL = 128  # Qwen2-Audio's and Qwen2.5-Omni's mel bins
AUDIO_POSITIONS = 1500  # Whisper's: 30 s of 10 ms mel frames after the stride-2 convolution


def _audio_encoder(clip: _Clip, text_embd: int, vision: OmniVisionShape) -> None:
    """Omni's audio tower as the converter writes it (Qwen25AudioModel) and mtmd reads it
    (models/whisper-enc.cpp): two 1-D convolutions (F16), sinusoidal positions, pre-norm blocks whose
    key has no bias, a final norm, and Qwen2-Audio's linear projector."""
    shape = vision.audio or Shape(vision.n_embd, vision.n_head, vision.n_head, vision.n_layer, vision.n_ff)
    embd = shape.n_embd
    clip.keys(
        "audio", 1e-5, _vision_keys(embd, shape.n_ff, shape.n_layer, shape.n_head, text_embd) | {"num_mel_bins": N_MEL}
    )
    clip.tensor("a.conv1d.1.weight", embd, N_MEL, 3, dtype=np.float16)  # ggml [kernel, in, out]
    clip.tensor("a.conv1d.1.bias", embd, 1)  # the converter's unsqueeze(-1)
    clip.tensor("a.conv1d.2.weight", embd, embd, 3, dtype=np.float16)
    clip.tensor("a.conv1d.2.bias", embd, 1)
    clip.w.add_tensor("a.position_embd.weight", _sinusoids(AUDIO_POSITIONS, embd))
    for i in range(shape.n_layer):
        b = f"a.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            clip.linear(f"{b}.{part}", embd, embd, bias=part != "attn_k")
        clip.norm(f"{b}.ln1", embd)
        clip.norm(f"{b}.ln2", embd)
        clip.linear(f"{b}.ffn_up", shape.n_ff, embd)
        clip.linear(f"{b}.ffn_down", embd, shape.n_ff)
    clip.norm("a.post_ln", embd)
    clip.linear("mm.a.fc", text_embd, embd)


def _finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@dataclass(frozen=True)
class VisionShape:
    """Dimensions of a tiny CLIP vision tower with a LLaVA-style MLP projector."""

    n_embd: int = 32
    n_head: int = 2
    n_ff: int = 64
    n_layer: int = 2
    image_size: int = 32
    patch_size: int = 8
    hidden: int = 64


def write_mmproj(path: Path, text_embd: int = 64, *, shape: VisionShape = VisionShape(), seed: int = 7) -> Path:
    """Write a tiny vision projector (general.architecture "clip", projector "mlp").

    Its output width equals the text model's embedding width, as llama.cpp's mtmd requires.
    """
    clip = _Clip(path, "tiny-mmproj", "mlp", seed)
    clip.w.add_bool("clip.use_gelu", True)
    embd, p = shape.n_embd, shape.patch_size
    clip.keys(
        "vision",
        1e-5,
        _vision_keys(embd, shape.n_ff, shape.n_layer, shape.n_head, text_embd)
        | {"image_size": shape.image_size, "patch_size": p},
    )
    clip.image_norm([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    clip.tensor("v.patch_embd.weight", embd, 3, p, p)
    clip.tensor("v.position_embd.weight", (shape.image_size // p) ** 2, embd)
    clip.norm("v.pre_ln", embd)
    for i in range(shape.n_layer):
        b = f"v.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            clip.linear(f"{b}.{part}", embd, embd)
        clip.norm(f"{b}.ln1", embd)
        clip.norm(f"{b}.ln2", embd)
        clip.linear(f"{b}.ffn_up", shape.n_ff, embd)
        clip.linear(f"{b}.ffn_down", embd, shape.n_ff)
    _merger(clip, embd, shape.hidden, text_embd)
    clip.finish()
    return path


def write_parrot_model(path: Path, script: list[str], *, seed: int = 7) -> Path:
    """A qwen2 GGUF that, after a prompt ending in a newline (every chat template's generation prompt),
    writes `script` and stops, whatever the prompt: the text to come from a real server's sampling and
    parsing, where a grammar cannot be sent (llama-server refuses one beside `tools`).

    Each piece of the script is one token (the tool-call tags are the vocabulary's own). Attention and
    MLP outputs are zero, so the last position's hidden state is its token's embedding: a basis vector
    for each token of the script, and the output matrix maps it to the next one (a bigram table that
    samplers cannot miss: logit 32 against 0).
    """
    tokens, types, merges = vocabulary()
    byte = _byte_tokens()
    chain = [tokens.index(byte[ord("\n")])]
    for piece in script:
        text = piece if piece in USER_TOKENS else "".join(byte[b] for b in piece.encode())
        if text not in tokens:
            tokens.append(text)
            types.append(int(gguf.TokenType.NORMAL))
        chain.append(tokens.index(text))
    chain.append(tokens.index("<|im_end|>"))
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError("each token of the script may appear once (the next one follows from it alone)")
    shape = Shape()
    w = gguf.GGUFWriter(str(path), "qwen2")
    _add_header(w, "qwen2", shape)
    _add_tokenizer(w, CHATML_TEMPLATE, (tokens, types, merges))
    embd = np.zeros((len(tokens), shape.n_embd), dtype=np.float32)
    out = np.zeros((len(tokens), shape.n_embd), dtype=np.float32)
    for k, (token, following) in enumerate(itertools.pairwise(chain)):
        embd[token, k] = 1.0
        out[following, k] = 4.0  # x RMSNorm's sqrt(n_embd) = 8: logit 32
    fixed = {"token_embd.weight": embd, "output.weight": out}
    _add_tensors(w, np.random.default_rng(seed), "qwen2", shape, len(tokens), fixed=fixed)
    _finish(w)
    return path
