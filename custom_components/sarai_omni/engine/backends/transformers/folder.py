"""A Hugging Face model folder described without torch: config.json and the safetensors headers.

What the transformers backend needs before it loads anything: is this a Qwen2.5-Omni, what does it
take (images, audio) and give (speech: a talker, token2wav and the voices' spk_dict.pt), and how much
memory will it hold per dtype. Parameters are counted from the weight files' own headers, per
component (thinker / talker / token2wav), so the estimate follows the folder, not a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import io
import json
from pathlib import Path
import pickle
import struct
from typing import Any
import zipfile

from ...errors import InvalidModelFile, ModelNotFound

SUPPORTED_TYPES = ("qwen2_5_omni",)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MB = 2**20
# The worker's own memory with torch and transformers imported, measured on this CPU build (idle worker).
TORCH_RUNTIME_BYTES = 340 * MB  # 337 MB measured (torch 2.13 CPU, transformers 5.24)
_HEADER_LIMIT = 100 * MB
MEL_FPS = 100  # token2wav's mel frames per second of speech
SPEECH_SECONDS = 32  # the longest sentence the talker is let say (its codes are capped per text token)
# The talker's, DiT's and the allocator's own while sentences are spoken: the tiny model's worker peaks
# 260 MB above its loaded RSS saying 23.5 s (benchmarks/omni_transformers.py); this leaves a margin.
SPEECH_OVERHEAD = 320 * MB


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, slots=True)
class HFInfo:
    """What a model folder says of itself."""

    path: Path
    model_type: str
    config: dict[str, Any] = field(repr=False)
    tensors: tuple[Tensor, ...] = field(repr=False)
    speakers_file: bool = False

    @property
    def thinker(self) -> dict[str, Any]:
        return dict(self.config.get("thinker_config") or {})

    @property
    def text(self) -> dict[str, Any]:
        return dict(self.thinker.get("text_config") or {})

    @property
    def has_vision(self) -> bool:
        return bool(self.thinker.get("vision_config"))

    @property
    def has_audio(self) -> bool:
        return bool(self.thinker.get("audio_config"))

    @property
    def talker(self) -> bool:
        """transformers builds the talker and token2wav (and needs spk_dict.pt) when this is set."""
        return bool(self.config.get("enable_audio_output", True)) and self.parameters("talker") > 0

    @property
    def speaks(self) -> bool:
        """A talker, token2wav and the voices' file."""
        return self.talker and self.speakers_file

    def parameters(self, component: str | None = None) -> int:
        """Parameters of the whole model, or of `thinker` / `talker` / `token2wav`."""
        return sum(t.elements for t in self.tensors if component is None or t.name.startswith(f"{component}."))

    @property
    def context_length(self) -> int:
        return int(self.text.get("max_position_embeddings") or 0)

    def kv_bytes_per_token(self, dtype: str) -> int:
        text = self.text
        heads = int(text.get("num_attention_heads") or 1)
        head_dim = int(text.get("head_dim") or int(text.get("hidden_size") or 0) // heads)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        return 2 * int(text.get("num_hidden_layers") or 0) * kv_heads * head_dim * DTYPE_BYTES.get(dtype, 4)

    def weight_bytes(self, dtype: str, quantization: str = "none") -> int:
        """Resident weights. token2wav always runs in float32 (transformers casts it); int8 keeps the
        thinker's linear weights in one byte each plus a scale per row, and everything else in float32
        (dynamic quantization works on float32 modules)."""
        size, total = (4 if quantization == "int8" else DTYPE_BYTES.get(dtype, 4)), 0  # int8: the rest float32
        for t in self.tensors:
            part = t.name.split(".", 1)[0]
            if part in ("talker", "token2wav") and not self.talker:
                continue
            if part == "token2wav":
                total += 4 * t.elements
            elif quantization == "int8" and part == "thinker" and len(t.shape) == 2 and "embed" not in t.name:
                total += t.elements + 8 * t.shape[0]
            else:
                total += size * t.elements
        return total

    def estimate_bytes(self, dtype: str, n_ctx: int, quantization: str = "none") -> int:
        """Resident memory once loaded: weights, the KV cache of a full context, activations, runtime."""
        hidden = int(self.text.get("hidden_size") or 0)
        vocab = int(self.text.get("vocab_size") or 0)
        activations = 4 * (512 * hidden * 8 + 2 * vocab)  # one prefill chunk, the logits rows
        kv = n_ctx * self.kv_bytes_per_token(dtype)
        return self.weight_bytes(dtype, quantization) + kv + activations + self.speech_bytes() + TORCH_RUNTIME_BYTES

    def speech_bytes(self) -> int:
        """Speaking one sentence: the vocoder's widest layer over SPEECH_SECONDS, a few tensors of it
        alive at once, plus SPEECH_OVERHEAD."""
        if not self.talker:
            return 0
        big = dict((self.config.get("token2wav_config") or {}).get("bigvgan_config") or {})
        channels = int(big.get("upsample_initial_channel", 1536))
        rates = [int(r) for r in big.get("upsample_rates", (5, 3, 2, 2, 2, 2))]
        widest, length = channels * MEL_FPS, MEL_FPS
        for k, rate in enumerate(rates, 1):
            length *= rate
            widest = max(widest, channels // 2**k * length)
        return 4 * 4 * widest * SPEECH_SECONDS + SPEECH_OVERHEAD


def is_model_folder(path: str | Path) -> bool:
    """A folder with a config.json (blocking: a stat)."""
    return (Path(path) / "config.json").is_file()


def read_folder(path: str | Path) -> HFInfo:
    """Read config.json and the safetensors headers (blocking file I/O: run it in a thread)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ModelNotFound(f"model folder not found: {folder}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InvalidModelFile(f"{folder.name}: no config.json (not a Hugging Face model folder)") from err
    except (OSError, ValueError) as err:
        raise InvalidModelFile(f"{folder.name}/config.json: {err}") from err
    if not isinstance(config, dict) or config.get("model_type") not in SUPPORTED_TYPES:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise InvalidModelFile(f"{folder.name}: model_type {found!r}, not one of {', '.join(SUPPORTED_TYPES)}")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InvalidModelFile(f"{folder.name}: no .safetensors weights")
    tensors = tuple(t for f in files for t in _safetensors_header(f))
    return HFInfo(folder, str(config["model_type"]), config, tensors, (folder / "spk_dict.pt").is_file())


def _safetensors_header(path: Path) -> list[Tensor]:
    """Each tensor's name and shape from a safetensors file's JSON header (no weights read)."""
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > _HEADER_LIMIT:
                raise InvalidModelFile(f"{path.name}: not a safetensors file")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as err:
        raise InvalidModelFile(f"{path.name}: not a safetensors file ({err})") from err
    out = []
    for name, meta in header.items():
        if name == "__metadata__" or not isinstance(meta, dict):
            continue
        out.append(Tensor(name, tuple(int(d) for d in meta.get("shape", []))))
    return out


def read_voices(folder: str | Path) -> tuple[str, ...]:
    """The speakers in spk_dict.pt (a torch zip archive), read without torch: only its top-level
    keys are kept; every object inside is replaced by a stub (nothing from the file is run)."""
    path = Path(folder) / "spk_dict.pt"
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return ()
            data = _KeysOnly(io.BytesIO(archive.read(name))).load()
    except Exception:  # noqa: BLE001  (any malformed pickle: no voices known before the load)
        return ()
    return tuple(sorted(k for k in data if isinstance(k, str))) if isinstance(data, dict) else ()


def _stub(*_: Any, **__: Any) -> None:
    return None


class _KeysOnly(pickle.Unpickler):
    """Builds dicts, lists and strings; every class or function the pickle names becomes a stub."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return _stub

    def persistent_load(self, pid: Any) -> None:  # tensor storages: not read
        return None
