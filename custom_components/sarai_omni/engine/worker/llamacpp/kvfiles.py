"""KV-cache snapshots of standing prompts on disk (the llama.cpp worker's): a restarted worker, or HA,
restores a standing prompt in milliseconds instead of evaluating it again."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
import contextlib
import ctypes
import hashlib
import os
from pathlib import Path
import sys
from typing import Any

from ... import protocol


class KVStateFiles:
    """KV-cache snapshots of standing prompts on disk, keyed by everything that shapes the state:
    the model file's identity (path, size, mtime), n_ctx, KV type, and the prompt's tokens.
    """

    KEEP = 8  # newest files kept per directory

    def __init__(self, load: dict[str, Any]) -> None:
        self.dir = Path(load["kv_cache_dir"]) if load.get("kv_cache_dir") else None
        stat = os.stat(load["model_path"])
        self._identity = "|".join(
            map(
                str,
                (
                    os.path.realpath(load["model_path"]),
                    stat.st_size,
                    stat.st_mtime_ns,
                    load.get("n_ctx"),
                    load.get("kv_type"),
                    protocol.PROTOCOL_VERSION,
                ),
            )
        )

    def path_for(self, tokens: Sequence[int]) -> Path | None:
        if self.dir is None:
            return None
        digest = hashlib.sha256(self._identity.encode() + array("i", tokens).tobytes()).hexdigest()[:32]
        return self.dir / f"{self.prefix}-{digest}.kv"

    @property
    def prefix(self) -> str:
        """This model's files start with it: pruning never touches another model's snapshots."""
        return "state-" + hashlib.sha256(self._identity.encode()).hexdigest()[:12]

    def restore(self, llm: Any, path: Path, tokens: list[int]) -> bool:
        import llama_cpp  # noqa: PLC0415  (worker-only)

        if not path.is_file():
            return False
        out = (llama_cpp.llama_token * len(tokens))()
        count = ctypes.c_size_t(0)
        llm.reset()
        if (
            not llama_cpp.llama_state_load_file(llm.ctx, str(path).encode(), out, len(tokens), ctypes.byref(count))
            or list(out[: count.value]) != tokens
        ):
            llm.reset()  # a stale or foreign file: evaluate instead
            return False
        llm.input_ids[: len(tokens)] = tokens
        llm.n_tokens = len(tokens)  # the Llama object's prefix matching must see the restored tokens
        os.utime(path)
        return True

    def save(self, llm: Any, path: Path, tokens: list[int]) -> None:
        import llama_cpp  # noqa: PLC0415  (worker-only)

        tmp = path.with_suffix(".tmp")
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if llama_cpp.llama_state_save_file(llm.ctx, str(tmp).encode(), arr, len(tokens)):
                tmp.replace(path)  # atomic: a crash mid-write never leaves a half file under the real name
            mine = sorted(path.parent.glob(f"{self.prefix}-*.kv"), key=lambda p: p.stat().st_mtime)
            for old in mine[: -self.KEEP]:
                old.unlink(missing_ok=True)
        except OSError as err:  # read-only or full: the snapshot is an optimisation, the answer is not
            print(f"KV snapshot not saved: {err}", file=sys.stderr)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)  # a partial file after a full disk
