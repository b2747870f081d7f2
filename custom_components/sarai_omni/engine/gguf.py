"""Read a GGUF file's header: architecture, size, quantization, context, projector kind.

Only the header is read (metadata and tensor infos); large arrays such as the tokenizer's vocabulary
are skipped, so reading a 5 GB model takes milliseconds. Blocking: call it from an executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import struct
from typing import Any, BinaryIO

from .errors import InvalidModelFile

GGUF_MAGIC = b"GGUF"
_DEFAULT_ALIGNMENT = 32
# Arrays longer than this are not kept (only their length): tokenizer vocabularies, merges, scores.
_MAX_KEPT_ARRAY = 64

# Value types of the GGUF spec: type id -> struct format (strings and arrays are handled apart).
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# general.file_type (llama_ftype) -> the name users know.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}

# Talkers this integration runs as voices (llama.cpp's audio generation, with their projector).
SPEECH_ARCHITECTURES = frozenset({"qwen3tts"})
SPEAKER_ENCODER = "qwen3tts_spkenc"  # a voice projector's audio encoder: it reads a reference clip
_AUDIO_TYPE = "clip.audio.projector_type"
# Text architectures this integration runs as chat models (llama.cpp supports them all).
TEXT_ARCHITECTURES = frozenset(
    {
        "llama",
        "mistral3",
        "qwen2",
        "qwen2vl",
        "qwen25vl",
        "qwen2moe",
        "qwen3",
        "qwen3moe",
        "qwen3vl",
        "qwen3vlmoe",
        "qwen25omni",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3n",
        "phi3",
        "phi4",
        "granite",
        "smollm3",
        "olmo2",
        "exaone",
        "glm4",
        "cohere2",
        "deepseek2",
        "falcon-h1",
        "lfm2",
        "gpt-oss",
    }
)
PROJECTOR_ARCHITECTURE = "clip"
# ggml tensor types: (values per block, bytes per block); a truncated file is told by the last
# tensor's end. Types not listed are not checked.
_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What the header says about a model file."""

    path: Path
    version: int
    architecture: str
    name: str | None
    file_size: int
    tensor_bytes: int
    parameter_count: int
    file_type: str | None
    context_length: int | None
    block_count: int | None
    embedding_length: int | None
    head_count: int | None
    head_count_kv: int | None
    key_length: int | None
    value_length: int | None
    sliding_window: int | None
    chat_template: str | None
    has_vision: bool
    has_audio: bool
    metadata: dict[str, Any] = field(repr=False)

    @property
    def projection_dim(self) -> int | None:
        """A projector's output width: it must equal its text model's embedding_length."""
        for key in ("clip.vision.projection_dim", "clip.audio.projection_dim"):
            if isinstance(value := self.metadata.get(key), int) and not isinstance(value, bool):
                return value
        return None

    @property
    def speaks(self) -> bool:
        """A talker that llama.cpp's audio generation drives (with a projector that generates audio)."""
        return self.architecture in SPEECH_ARCHITECTURES

    @property
    def generates_audio(self) -> bool:
        """A projector that turns a talker's codes into audio (Qwen3-TTS's code predictor and code2wav)."""
        return self.is_projector and bool(self.metadata.get("clip.has_gen_audio_encoder"))

    @property
    def is_projector(self) -> bool:
        """True for an mmproj (vision/audio projector) file."""
        return self.architecture == PROJECTOR_ARCHITECTURE

    @property
    def is_supported_text_model(self) -> bool:
        """True when the file is a chat/text model this integration can run."""
        return self.architecture in TEXT_ARCHITECTURES

    def kv_bytes_per_token(self, kv_type_bytes: float = 2.0) -> int:
        """Bytes of K+V cache one token of context costs across all layers."""
        layers, heads_kv = self.block_count or 0, self.head_count_kv or self.head_count or 0
        head_dim = (self.embedding_length or 0) // max(self.head_count or 1, 1)
        k_len, v_len = self.key_length or head_dim, self.value_length or head_dim
        return int(layers * heads_kv * (k_len + v_len) * kv_type_bytes)

    def summary(self) -> dict[str, Any]:
        """A small, JSON-friendly description for the UI and diagnostics."""
        return {
            "architecture": self.architecture,
            "name": self.name,
            "parameters": self.parameter_count,
            "quantization": self.file_type,
            "context_length": self.context_length,
            "file_size_mb": round(self.file_size / 2**20, 1),
            "chat_template": self.chat_template is not None,
            "vision": self.has_vision,
            "audio": self.has_audio,
        }


class _Reader:
    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self._fh.read(size)
        if len(data) != size:
            raise InvalidModelFile("truncated GGUF header")
        return struct.unpack(fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 28:
            raise InvalidModelFile("corrupt GGUF string length")
        data = self._fh.read(length)
        if len(data) != length:
            raise InvalidModelFile("truncated GGUF header")
        return data.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise InvalidModelFile(f"unknown GGUF value type {vtype}")

    def array(self) -> list[Any] | int:
        """Return the items of a short array, or only the length of a long one."""
        item_type, count = self.unpack("<I"), self.unpack("<Q")
        if count <= _MAX_KEPT_ARRAY:
            return [self.value(item_type) for _ in range(count)]
        if item_type in _SCALARS:  # fixed size: skip in one seek
            self._fh.seek(count * struct.calcsize(_SCALARS[item_type]), 1)
        else:
            for _ in range(count):
                self.value(item_type)
        return int(count)


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse a GGUF header. Raises InvalidModelFile when the file is not a readable GGUF."""
    path = Path(path)
    file_size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise InvalidModelFile("not a GGUF file")
        reader = _Reader(fh)
        version = reader.unpack("<I")
        if version not in (2, 3):
            raise InvalidModelFile(f"unsupported GGUF version {version}")
        n_tensors, n_kv = reader.unpack("<Q"), reader.unpack("<Q")
        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = reader.string()
            meta[key] = reader.value(reader.unpack("<I"))
        params, data_end = 0, 0
        for _ in range(n_tensors):
            reader.string()
            dims = [reader.unpack("<Q") for _ in range(reader.unpack("<I"))]
            ggml_type, offset = reader.unpack("<I"), reader.unpack("<Q")
            count = 1
            for dim in dims:
                count *= dim
            params += count
            if (size := _TYPE_SIZES.get(ggml_type)) is not None:
                data_end = max(data_end, offset + count // size[0] * size[1])
        align = int(meta.get("general.alignment", _DEFAULT_ALIGNMENT))
        data_start = -(-fh.tell() // align) * align
    if data_end and file_size < data_start + data_end:
        raise InvalidModelFile(f"truncated: {file_size:,} bytes of the {data_start + data_end:,} its header describes")
    return _info(path, meta, version=version, size=file_size, tbytes=max(file_size - data_start, 0), params=params)


def _info(path: Path, meta: dict[str, Any], *, version: int, size: int, tbytes: int, params: int) -> GGUFInfo:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise InvalidModelFile("GGUF header has no general.architecture")

    def num(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    file_type = meta.get("general.file_type")
    template = meta.get("tokenizer.chat_template")
    projector = arch == PROJECTOR_ARCHITECTURE
    return GGUFInfo(
        path=path,
        version=version,
        architecture=arch,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        file_size=size,
        tensor_bytes=tbytes,
        parameter_count=params,
        file_type=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        context_length=num("context_length"),
        block_count=num("block_count"),
        embedding_length=num("embedding_length"),
        head_count=num("attention.head_count"),
        head_count_kv=num("attention.head_count_kv"),
        key_length=num("attention.key_length"),
        value_length=num("attention.value_length"),
        sliding_window=num("attention.sliding_window"),
        chat_template=template if isinstance(template, str) and template.strip() else None,
        has_vision=projector and bool(meta.get("clip.has_vision_encoder")),
        # a Qwen3-TTS projector's audio encoder hears who speaks (a voice's reference clip), not speech
        has_audio=projector and bool(meta.get("clip.has_audio_encoder")) and meta.get(_AUDIO_TYPE) != SPEAKER_ENCODER,
        metadata=meta,
    )
