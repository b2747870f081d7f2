"""Write tiny random-weight GGUF models that llama.cpp really loads and runs.

qwen2 / qwen3 text models with a byte-level BPE tokenizer and a ChatML (Qwen2.5-style, with tools)
chat template, a few hundred KB each. Random weights: speed, memory and plumbing are real, the text
is not; tests that need exact text force it with a grammar.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    if arch == "qwen3":
        w.add_key_length(shape.head_dim)
        w.add_value_length(shape.head_dim)
    n_vocab = _add_tokenizer(w, chat_template)
    _add_tensors(w, np.random.default_rng(seed), arch, shape, n_vocab)
    _finish(w)
    return path


def _add_tokenizer(w: gguf.GGUFWriter, chat_template: str | None) -> int:
    tokens, types, merges = vocabulary()
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


def _add_tensors(w: gguf.GGUFWriter, rng: np.random.Generator, arch: str, shape: Shape, n_vocab: int) -> None:
    def tensor(name: str, *dims: int, scale: float = 0.02) -> None:
        w.add_tensor(name, (rng.standard_normal(dims) * scale).astype(np.float32))

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
        if arch == "qwen2":
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


N_MEL = 128  # Qwen2-Audio's and Qwen2.5-Omni's mel bins
AUDIO_POSITIONS = 1500  # Whisper's: 30 s of 10 ms mel frames after the stride-2 convolution


def _audio_encoder(w: gguf.GGUFWriter, tensor: Any, norm: Any, text_embd: int, shape: VisionShape) -> None:
    """Whisper's encoder as mtmd reads it (models/whisper-enc.cpp): two 1-D convolutions, learned
    positions, pre-norm blocks whose key has no bias, a final norm, and Qwen2-Audio's linear projector."""
    embd = shape.n_embd
    w.add_string("clip.audio.projector_type", "qwen2a")
    for key, value in (
        ("embedding_length", embd),
        ("feed_forward_length", shape.n_ff),
        ("block_count", shape.n_layer),
        ("projection_dim", text_embd),
        ("attention.head_count", shape.n_head),
        ("num_mel_bins", N_MEL),
    ):
        w.add_uint32(f"clip.audio.{key}", value)
    w.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    tensor("a.conv1d.1.weight", embd, N_MEL, 3)  # ggml [kernel, in, out]
    tensor("a.conv1d.1.bias", embd, 1)
    tensor("a.conv1d.2.weight", embd, embd, 3)
    tensor("a.conv1d.2.bias", embd, 1)
    tensor("a.position_embd.weight", AUDIO_POSITIONS, embd)
    for i in range(shape.n_layer):
        b = f"a.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensor(f"{b}.{part}.weight", embd, embd)
            if part != "attn_k":
                tensor(f"{b}.{part}.bias", embd)
        norm(f"{b}.ln1", embd)
        norm(f"{b}.ln2", embd)
        tensor(f"{b}.ffn_up.weight", shape.n_ff, embd)
        tensor(f"{b}.ffn_up.bias", shape.n_ff)
        tensor(f"{b}.ffn_down.weight", embd, shape.n_ff)
        tensor(f"{b}.ffn_down.bias", embd)
    norm("a.post_ln", embd)
    tensor("mm.a.fc.weight", text_embd, embd)
    tensor("mm.a.fc.bias", text_embd)


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


def write_mmproj(
    path: Path, text_embd: int = 64, *, shape: VisionShape = VisionShape(), seed: int = 7, audio: bool = False
) -> Path:
    """Write a tiny vision projector (general.architecture "clip", projector "mlp").

    Its output width equals the text model's embedding width, as llama.cpp's mtmd requires. With
    `audio`, the file also holds a Whisper-style audio encoder with Qwen2-Audio's projector
    (`clip.audio.projector_type` "qwen2a", the audio half of what Qwen2.5-Omni's "qwen2.5o" becomes
    in mtmd): a projector that sees and hears.
    """
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("tiny-mmproj")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_audio_encoder", audio)
    w.add_bool("clip.use_gelu", True)
    w.add_string("clip.vision.projector_type" if audio else "clip.projector_type", "mlp")
    for key, value in (
        ("embedding_length", shape.n_embd),
        ("feed_forward_length", shape.n_ff),
        ("block_count", shape.n_layer),
        ("projection_dim", text_embd),
        ("attention.head_count", shape.n_head),
        ("image_size", shape.image_size),
        ("patch_size", shape.patch_size),
    ):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def tensor(name: str, *dims: int, scale: float = 0.02) -> None:
        w.add_tensor(name, (rng.standard_normal(dims) * scale).astype(np.float32))

    def norm(name: str, n: int) -> None:
        w.add_tensor(f"{name}.weight", np.ones(n, dtype=np.float32))
        w.add_tensor(f"{name}.bias", np.zeros(n, dtype=np.float32))

    embd, n_pos = shape.n_embd, (shape.image_size // shape.patch_size) ** 2
    tensor("v.patch_embd.weight", embd, 3, shape.patch_size, shape.patch_size)
    tensor("v.position_embd.weight", n_pos, embd)
    norm("v.pre_ln", embd)
    for i in range(shape.n_layer):
        b = f"v.blk.{i}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensor(f"{b}.{part}.weight", embd, embd)
            tensor(f"{b}.{part}.bias", embd)
        norm(f"{b}.ln1", embd)
        norm(f"{b}.ln2", embd)
        tensor(f"{b}.ffn_up.weight", shape.n_ff, embd)
        tensor(f"{b}.ffn_up.bias", shape.n_ff)
        tensor(f"{b}.ffn_down.weight", embd, shape.n_ff)
        tensor(f"{b}.ffn_down.bias", embd)
    tensor("mm.0.weight", shape.hidden, embd)
    tensor("mm.0.bias", shape.hidden)
    tensor("mm.2.weight", text_embd, shape.hidden)
    tensor("mm.2.bias", text_embd)
    if audio:
        _audio_encoder(w, tensor, norm, text_embd, shape)
    _finish(w)
    return path
