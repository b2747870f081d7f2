"""What a role's files say, read once and without loading anything: a GGUF's header and its
projector's, or a model folder's config and weights' headers and voices (blocking file I/O: run in a
thread). The pool, the flow's validation and the capabilities all read the same `ModelFiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends.transformers.folder import HFInfo, read_folder, read_voices
from .capabilities import CHAT, HEAR, SEE, SPEAK, TOOLS
from .errors import ModelNotFound
from .gguf import GGUFInfo, read_gguf
from .spec import FolderModel, GGUFModel, ModelSpec, RemoteModel
from .voices import voice_clips


@dataclass(frozen=True, slots=True)
class ModelFiles:
    gguf: GGUFInfo | None = None
    mmproj: GGUFInfo | None = None
    folder: HFInfo | None = None
    voices: tuple[str, ...] = ()  # a folder's talker's speakers (spk_dict.pt), a voice GGUF's clips

    @property
    def parameters(self) -> int:
        """The model's parameter count (0 for a server's model: unknown here)."""
        if self.folder is not None:
            return self.folder.parameters()
        return self.gguf.parameter_count if self.gguf is not None else 0


def read_files(spec: ModelSpec) -> ModelFiles:
    """Read what `spec`'s model files say (ModelNotFound, InvalidModelFile when they cannot be)."""
    source = spec.source
    if isinstance(source, RemoteModel):
        return ModelFiles()
    if isinstance(source, FolderModel):
        folder = read_folder(source.path)
        return ModelFiles(folder=folder, voices=read_voices(source.path) if folder.speaks else ())
    info = read_gguf_file(source.path)
    mmproj = read_gguf_file(source.mmproj) if source.mmproj else None
    voices = tuple(voice_clips(spec.runtime.voices_dir)) if info.speaks else ()
    return ModelFiles(gguf=info, mmproj=mmproj, voices=voices)


def read_gguf_file(path: str) -> GGUFInfo:
    if not Path(path).is_file():
        raise ModelNotFound(f"model file not found: {path}")
    return read_gguf(path)


def capabilities_of(spec: ModelSpec, files: ModelFiles) -> frozenset[str]:
    """What the role can do: as declared, else as its files (or its server's settings) say."""
    if spec.capabilities is not None:
        return spec.capabilities
    if isinstance(spec.source, RemoteModel):
        return _of_remote(spec.source)
    if files.folder is not None:
        return _of_folder(files.folder, files.voices)
    if files.gguf is not None and isinstance(spec.source, GGUFModel):
        return _of_gguf(files.gguf, files.mmproj)
    return frozenset()


def _of_gguf(info: GGUFInfo, mmproj: GGUFInfo | None = None) -> frozenset[str]:
    """A GGUF text model: chat; tools when its template lists them; what its projector's encoders take.
    A Qwen3-TTS talker only speaks, and only with its projector (the code predictor and code2wav)."""
    if info.speaks:
        return frozenset({SPEAK}) if mmproj is not None and mmproj.generates_audio else frozenset()
    found = {CHAT}
    if info.chat_template and "tools" in info.chat_template:
        found.add(TOOLS)
    if mmproj is not None:
        found |= {c for c, on in ((SEE, mmproj.has_vision), (HEAR, mmproj.has_audio)) if on}
    return frozenset(found)


def _of_folder(info: HFInfo, voices: tuple[str, ...] = ()) -> frozenset[str]:
    """A Qwen2.5-Omni folder: its thinker chats, its encoders see and hear, its talker speaks."""
    found = {CHAT} | {c for c, on in ((SEE, info.has_vision), (HEAR, info.has_audio)) if on}
    if info.speaks and voices:
        found.add(SPEAK)
    return frozenset(found)


def _of_remote(remote: RemoteModel) -> frozenset[str]:
    """A server's model: chat and tools (the server parses calls); images and audio as declared."""
    return frozenset({CHAT, TOOLS} | {c for c, on in ((SEE, remote.vision), (HEAR, remote.audio)) if on})
