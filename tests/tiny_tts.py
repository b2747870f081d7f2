"""Qwen3-TTS voices as GGUF pairs, written with gguf-py exactly as llama.cpp's converter writes them.

A voice is a talker (libllama arch `qwen3tts`: a Qwen3 with interleaved M-RoPE over a text + codec
vocabulary and a 3,072-entry codec head) and a projector holding the ECAPA-TDNN speaker encoder
(`qwen3tts_spkenc`), the code predictor and code2wav (`qwen3tts_gen`). Names, keys and types follow
the vendored `conversion/qwen3tts.py` and `gguf-py/gguf/constants.py`; the shapes that are not in any
key are the ones `tools/mtmd/clip.cpp` and `models/qwen3tts-*.cpp` hard-code (3 SE-Res2Net blocks of
scale 8, 8 code2wav transformer layers of 16 heads, 2 upsampling blocks, 4 DAC blocks of 3 residual
units at strides 8/5/4/3: 1,920 samples of 24 kHz per 12.5 Hz frame).

transformers has no Qwen3-TTS classes, so no checkpoint is converted here: `TINY` is a few MB that
loads and speaks (noise) in a second; `SEED_06B` / `SEED_17B` have the exact shapes of
Qwen3-TTS-12Hz-0.6B-Base and 1.7B-Base with random values (benchmarks). No torch anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tests.tiny_models import SPECIAL_TOKENS, mrope_sections, vocabulary

CODEC_VOCAB = 3072  # the talker's codec head; codes 0..2047 are codebook 0, the rest are specials
CODEBOOK = 2048  # entries per codebook
N_GROUPS = 16  # codebooks per frame: codebook 0 from the talker, 15 from the code predictor
# The talker's special codec rows (Qwen3-TTS's talker_config); llama.cpp finds them by name.
CODEC_IDS = {
    "codec_pad": 2148,
    "codec_bos": 2149,
    "codec_eos_token": 2150,
    "codec_think": 2154,
    "codec_nothink": 2155,
    "codec_think_bos": 2156,
    "codec_think_eos": 2157,
}
LANGUAGE_IDS = {
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "chinese": 2055,
    "japanese": 2058,
    "french": 2061,
    "korean": 2064,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
}
TTS_TOKENS = ("<tts_pad>", "<tts_text_bos>", "<tts_text_eod>")  # text-side specials the prompt uses
DAC_STRIDES = (8, 5, 4, 3)  # x 2 x 2 upsampling = 1,920 samples per frame


@dataclass(frozen=True)
class VoiceShape:
    """Every width of a Qwen3-TTS voice (talker, code predictor, speaker encoder, code2wav)."""

    name: str
    n_embd: int  # talker hidden
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    text_vocab: int  # rows before the codec's (Qwen's 151,936)
    cp_embd: int  # code predictor hidden (a projection in between when it differs from the talker's)
    cp_layer: int
    cp_ff: int
    cp_head: int
    cp_head_kv: int
    cp_head_dim: int
    spk_channels: int  # ECAPA's 512
    spk_mfa: int  # 1536
    spk_attn: int  # 128 (attention and squeeze-excite bottleneck)
    cb_dim: int  # 256: a codebook entry
    q_dim: int  # 512: the quantizer's output
    latent: int  # 1024
    tfm_embd: int  # 512
    tfm_head_dim: int  # 64 (16 heads)
    tfm_ff: int  # 1024
    dac_dim: int  # 1536, halved by each DAC block


TINY = VoiceShape("tiny", 64, 2, 128, 4, 2, 16, 0, 32, 2, 64, 4, 2, 8, 64, 192, 16, 16, 32, 64, 32, 4, 64, 64)
SEED_06B = VoiceShape(
    "qwen3tts-0.6b", 1024, 28, 3072, 16, 8, 128, 151936,
    1024, 5, 3072, 16, 8, 128, 512, 1536, 128, 256, 512, 1024, 512, 64, 1024, 1536,
)  # fmt: skip
SEED_17B = VoiceShape(
    "qwen3tts-1.7b", 2048, 28, 6144, 16, 8, 128, 151936,
    1024, 5, 3072, 16, 8, 128, 512, 1536, 128, 256, 512, 1024, 512, 64, 1024, 1536,
)  # fmt: skip


def write_voice(folder: Path, shape: VoiceShape = TINY, *, seed: int = 3) -> tuple[Path, Path]:
    """(talker, projector) GGUFs of `shape` in `folder`; each written once (kept when present)."""
    folder.mkdir(parents=True, exist_ok=True)
    talker, projector = folder / f"{shape.name}-talker.gguf", folder / f"mmproj-{shape.name}.gguf"
    if not talker.is_file():
        _write(talker, "qwen3tts", shape, keys=_talker_keys, tensors=_talker_tensors(shape), seed=seed)
    if not projector.is_file():
        _write(projector, "clip", shape, keys=_projector_keys, tensors=_projector_tensors(shape), seed=seed + 1)
    return talker, projector


# A tensor to write: (name, numpy shape, dtype, how its values are made: "rand" (N(0, 0.02)), "unit"
# (variance 1 / fan-in: code2wav's deep convolutions keep a signal instead of fading to their bias),
# "small" or "ones").
Tensor = tuple[str, tuple[int, ...], type, str]


Keys = Callable[[gguf.GGUFWriter, "VoiceShape"], None]


def _write(path: Path, arch: str, shape: VoiceShape, *, keys: Keys, tensors: list[Tensor], seed: int) -> None:
    """Stream the tensors out (the seed shapes are GBs): header, keys, infos, then the data."""
    tmp = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), arch)
    keys(w, shape)
    for name, dims, dtype, _ in tensors:
        w.add_tensor_info(name, dims, np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    pool = _values(seed)
    for _, dims, dtype, kind in tensors:
        if kind == "ones":
            w.write_tensor_data(np.ones(dims, dtype=dtype))
        else:
            scale = {"small": 0.5, "rand": 1.0, "unit": 25.0 / float(np.sqrt(np.prod(dims[1:])))}[kind]
            w.write_tensor_data((pool(dims) * np.float32(scale)).astype(dtype))
    w.close()
    tmp.replace(path)


def _values(seed: int) -> Callable[[tuple[int, ...]], np.ndarray]:
    """Random N(0, 0.02) values cut from one pool (billions of fresh normals would take minutes)."""
    values = np.random.default_rng(seed).standard_normal(1 << 24, dtype=np.float32) * np.float32(0.02)
    offset = [0]

    def take(dims: tuple[int, ...]) -> np.ndarray:
        start, offset[0] = offset[0] % 4099, offset[0] + 1
        return np.resize(values[start:], int(np.prod(dims))).reshape(dims)

    return take


# -- the talker ---------------------------------------------------------------------------------
def talker_vocabulary(shape: VoiceShape) -> tuple[list[str], list[int], list[str]]:
    """[text | codec] as the converter lays it out: the text tokens (the tiny BPE, padded to the
    seed's size with unused rows), then one control token per codec row, named as the converter names them."""
    tokens, types, merges = vocabulary()
    tokens += list(TTS_TOKENS)
    types += [int(gguf.TokenType.CONTROL)] * len(TTS_TOKENS)
    pad = max(shape.text_vocab - len(tokens), 0)
    tokens += [f"<|unused_{i}|>" for i in range(pad)]
    types += [int(gguf.TokenType.UNUSED)] * pad
    codec = [f"<|codec_{i}|>" for i in range(CODEC_VOCAB)]
    for name, row in CODEC_IDS.items():
        codec[row] = f"<|{name}|>"
    for language, row in LANGUAGE_IDS.items():
        codec[row] = f"<|codec_language_{language}|>"
    return tokens + codec, types + [int(gguf.TokenType.CONTROL)] * CODEC_VOCAB, merges


def _talker_keys(w: gguf.GGUFWriter, shape: VoiceShape) -> None:
    w.add_name(f"{shape.name} talker (random weights)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(32768)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_rope_dimension_sections(mrope_sections(shape.head_dim, (24, 20, 20)))
    tokens, types, merges = talker_vocabulary(shape)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eos = tokens.index("<|codec_eos_token|>")
    w.add_array("tokenizer.ggml.suppress_tokens", [i for i in range(len(tokens) - 1024, len(tokens)) if i != eos])
    w.add_eos_token_id(eos)
    w.add_bool("tokenizer.ggml.add_eos_token", False)
    w.add_pad_token_id(tokens.index(SPECIAL_TOKENS[0]))
    w.add_add_bos_token(False)


def _talker_tensors(s: VoiceShape) -> list[Tensor]:
    n_vocab = len(talker_vocabulary(s)[0])
    q, kv = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    out: list[Tensor] = [("token_embd.weight", (n_vocab, s.n_embd), np.float16, "rand")]
    for i in range(s.n_layer):
        b = f"blk.{i}"
        out += [(f"{b}.attn_norm.weight", (s.n_embd,), np.float32, "ones")]
        out += [(f"{b}.attn_q.weight", (q, s.n_embd), np.float16, "rand")]
        out += [(f"{b}.attn_k.weight", (kv, s.n_embd), np.float16, "rand")]
        out += [(f"{b}.attn_v.weight", (kv, s.n_embd), np.float16, "rand")]
        out += [(f"{b}.attn_output.weight", (s.n_embd, q), np.float16, "rand")]
        out += [(f"{b}.attn_q_norm.weight", (s.head_dim,), np.float32, "ones")]
        out += [(f"{b}.attn_k_norm.weight", (s.head_dim,), np.float32, "ones")]
        out += [(f"{b}.ffn_norm.weight", (s.n_embd,), np.float32, "ones")]
        out += [(f"{b}.ffn_gate.weight", (s.n_ff, s.n_embd), np.float16, "rand")]
        out += [(f"{b}.ffn_up.weight", (s.n_ff, s.n_embd), np.float16, "rand")]
        out += [(f"{b}.ffn_down.weight", (s.n_embd, s.n_ff), np.float16, "rand")]
    out += [("output_norm.weight", (s.n_embd,), np.float32, "ones")]
    out += [("output.weight", (CODEC_VOCAB, s.n_embd), np.float16, "rand")]  # the codec head
    return out


# -- the projector: speaker encoder, code predictor, code2wav ----------------------------------
def _projector_keys(w: gguf.GGUFWriter, s: VoiceShape) -> None:
    """The converter's keys (Qwen3TTSSpeakerEncoderModel.set_gguf_parameters), spelled out: PyPI's
    gguf-py predates the audio generation keys."""
    w.add_name(f"{s.name} speaker encoder, code predictor and code2wav (random weights)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_bool("clip.has_audio_encoder", True)
    w.add_string("clip.audio.projector_type", "qwen3tts_spkenc")
    for key, value in {"projection_dim": s.n_embd, "num_mel_bins": 128, "block_count": 3}.items():
        w.add_uint32(f"clip.audio.{key}", value)
    for key, value in {"embedding_length": 1536, "attention.head_count": 1, "feed_forward_length": 1536}.items():
        w.add_uint32(f"clip.audio.{key}", value)  # ECAPA has no attention: what clip.cpp's loader needs
    w.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    w.add_bool("clip.has_gen_audio_encoder", True)
    w.add_string("clip.gen.audio.projector_type", "qwen3tts_gen")
    gen = {
        "projection_dim": s.n_embd,
        "embedding_length": s.cp_embd,
        "feed_forward_length": s.cp_ff,
        "block_count": s.cp_layer,
        "attention.head_count": s.cp_head,
        "attention.head_count_kv": s.cp_head_kv,
    }
    for key, value in gen.items():
        w.add_uint32(f"clip.gen.audio.{key}", value)
    w.add_float32("clip.gen.audio.attention.layer_norm_epsilon", 1e-6)


def _conv(name: str, out: int, inp: int, k: int, dtype: type = np.float16) -> Iterator[Tensor]:
    """A Conv1d as torch holds it ([out, in, k]) and its bias."""
    yield (f"{name}.weight", (out, inp, k), dtype, "unit" if name.startswith("a.gen.wav.") else "rand")
    yield (f"{name}.bias", (out,), np.float32, "rand")


def _linear(name: str, out: int, inp: int, bias: bool = True, dtype: type = np.float16) -> Iterator[Tensor]:
    yield (f"{name}.weight", (out, inp), dtype, "unit" if name.startswith("a.gen.wav.") else "rand")
    if bias:
        yield (f"{name}.bias", (out,), np.float32, "rand")


def _speaker_encoder(s: VoiceShape) -> Iterator[Tensor]:
    c, scale = s.spk_channels, 8
    yield from _conv("a.conv1d.0", c, 128, 5)
    for bid in (1, 2, 3):
        yield from _conv(f"a.blk.{bid}.conv_pw1", c, c, 1)
        for xid in range(scale - 1):
            yield from _conv(f"a.blk.{bid}.res2.{xid}", c // scale, c // scale, 3)
        yield from _conv(f"a.blk.{bid}.conv_pw2", c, c, 1)
        yield from _conv(f"a.blk.{bid}.se_conv1", s.spk_attn, c, 1)
        yield from _conv(f"a.blk.{bid}.se_conv2", c, s.spk_attn, 1)
    yield from _conv("a.conv_out", s.spk_mfa, 3 * c, 1)
    yield from _conv("a.asp_tdnn", s.spk_attn, 3 * s.spk_mfa, 1)
    yield from _conv("a.asp_attn", s.spk_mfa, s.spk_attn, 1)
    yield from _conv("mm.a.fc", s.n_embd, 2 * s.spk_mfa, 1)


def _code_predictor(s: VoiceShape) -> Iterator[Tensor]:
    n_acoustic, q, kv = N_GROUPS - 1, s.cp_head * s.cp_head_dim, s.cp_head_kv * s.cp_head_dim
    if s.cp_embd != s.n_embd:  # small_to_mtp_projection
        yield from _linear("a.gen.code.proj_in", s.cp_embd, s.n_embd)
    yield ("a.gen.code.embd.weight", (n_acoustic, CODEBOOK, s.n_embd), np.float16, "rand")
    yield ("a.gen.code.head.weight", (n_acoustic, CODEBOOK, s.cp_embd), np.float16, "rand")
    yield ("a.gen.code.out_embd.weight", (CODEC_VOCAB, s.n_embd), np.float16, "rand")
    yield ("a.gen.code.output_norm.weight", (s.cp_embd,), np.float32, "ones")
    for i in range(s.cp_layer):
        b = f"a.gen.code.blk.{i}"
        yield (f"{b}.ln1.weight", (s.cp_embd,), np.float32, "ones")
        yield from _linear(f"{b}.attn_q", q, s.cp_embd, bias=False)
        yield (f"{b}.attn_q_norm.weight", (s.cp_head_dim,), np.float32, "ones")
        yield from _linear(f"{b}.attn_k", kv, s.cp_embd, bias=False)
        yield (f"{b}.attn_k_norm.weight", (s.cp_head_dim,), np.float32, "ones")
        yield from _linear(f"{b}.attn_v", kv, s.cp_embd, bias=False)
        yield from _linear(f"{b}.attn_out", s.cp_embd, q, bias=False)
        yield (f"{b}.ln2.weight", (s.cp_embd,), np.float32, "ones")
        yield from _linear(f"{b}.ffn_gate", s.cp_ff, s.cp_embd, bias=False)
        yield from _linear(f"{b}.ffn_up", s.cp_ff, s.cp_embd, bias=False)
        yield from _linear(f"{b}.ffn_down", s.cp_embd, s.cp_ff, bias=False, dtype=np.float32)  # F16 overflows


def _code2wav(s: VoiceShape) -> Iterator[Tensor]:
    w = "a.gen.wav"
    yield from _linear(f"{w}.quant.first.in_proj", s.cb_dim, s.q_dim, bias=False)
    yield from _linear(f"{w}.quant.first.out_proj", s.q_dim, s.cb_dim, bias=False)
    yield (f"{w}.quant.first.codebook.weight", (CODEBOOK, s.cb_dim), np.float32, "rand")
    yield from _linear(f"{w}.quant.rest.in_proj", s.cb_dim, s.q_dim, bias=False)
    yield from _linear(f"{w}.quant.rest.out_proj", s.q_dim, s.cb_dim, bias=False)
    yield (f"{w}.quant.rest.codebook.weight", (N_GROUPS - 1, CODEBOOK, s.cb_dim), np.float32, "rand")
    yield from _conv(f"{w}.pre_conv", s.latent, s.q_dim, 3)
    yield from _linear(f"{w}.tfm.in_proj", s.tfm_embd, s.latent)
    yield from _linear(f"{w}.tfm.out_proj", s.latent, s.tfm_embd)
    yield (f"{w}.tfm.output_norm.weight", (s.tfm_embd,), np.float32, "ones")
    heads = 16 * s.tfm_head_dim
    for i in range(8):
        b = f"{w}.tfm.blk.{i}"
        yield (f"{b}.ln1.weight", (s.tfm_embd,), np.float32, "ones")
        for part in ("attn_q", "attn_k", "attn_v"):
            yield from _linear(f"{b}.{part}", heads, s.tfm_embd, bias=False)
        yield from _linear(f"{b}.attn_out", s.tfm_embd, heads, bias=False)
        yield (f"{b}.ls1.weight", (s.tfm_embd,), np.float32, "small")
        yield (f"{b}.ln2.weight", (s.tfm_embd,), np.float32, "ones")
        yield from _linear(f"{b}.ffn_gate", s.tfm_ff, s.tfm_embd, bias=False)
        yield from _linear(f"{b}.ffn_up", s.tfm_ff, s.tfm_embd, bias=False)
        yield from _linear(f"{b}.ffn_down", s.tfm_embd, s.tfm_ff, bias=False)
        yield (f"{b}.ls2.weight", (s.tfm_embd,), np.float32, "small")
    for i in range(2):  # 2x: ConvTranspose1d (torch [in, out, k]) + ConvNeXt
        b = f"{w}.up.blk.{i}"
        yield from _conv(f"{b}.conv", s.latent, s.latent, 2, np.float32)
        yield from _conv(f"{b}.dwconv", s.latent, 1, 7)
        yield (f"{b}.norm.weight", (s.latent,), np.float32, "ones")
        yield (f"{b}.norm.bias", (s.latent,), np.float32, "rand")
        yield from _linear(f"{b}.pw1", 4 * s.latent, s.latent)
        yield from _linear(f"{b}.pw2", s.latent, 4 * s.latent)
        yield (f"{b}.gamma", (s.latent,), np.float32, "small")
    yield from _conv(f"{w}.dac.entry", s.dac_dim, s.latent, 7)
    width = s.dac_dim
    for i, stride in enumerate(DAC_STRIDES):
        b, out = f"{w}.dac.blk.{i}", width // 2
        yield (f"{b}.snake.alpha", (width,), np.float32, "ones")
        yield (f"{b}.snake.beta", (width,), np.float32, "ones")
        yield (f"{b}.conv.weight", (width, out, 2 * stride), np.float32, "unit")  # transposed: [in, out, k]
        yield (f"{b}.conv.bias", (out,), np.float32, "rand")
        for r in range(3):
            yield (f"{b}.res.{r}.act1.alpha", (out,), np.float32, "ones")
            yield (f"{b}.res.{r}.act1.beta", (out,), np.float32, "ones")
            yield from _conv(f"{b}.res.{r}.conv1", out, out, 7)
            yield (f"{b}.res.{r}.act2.alpha", (out,), np.float32, "ones")
            yield (f"{b}.res.{r}.act2.beta", (out,), np.float32, "ones")
            yield from _conv(f"{b}.res.{r}.conv2", out, out, 1)
        width = out
    yield (f"{w}.dac.post_snake.alpha", (width,), np.float32, "ones")
    yield (f"{w}.dac.post_snake.beta", (width,), np.float32, "ones")
    yield from _conv(f"{w}.dac.post_conv", 1, width, 7)


def _projector_tensors(s: VoiceShape) -> list[Tensor]:
    return [*_speaker_encoder(s), *_code_predictor(s), *_code2wav(s)]
