"""The llama-cpp-python sources this project builds: the real pinned sdist, fetched over HTTP from a
server on 127.0.0.1 (standing in for PyPI), checked, unpacked and patched."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import http.server
from pathlib import Path
import threading

import pytest

from custom_components.sarai_omni.engine import llama_sources
from tests.torch_env import CACHE

SDIST = CACHE / "sdist" / f"llama_cpp_python-{llama_sources.VERSION}.tar.gz"  # scripts/setup fetched it
MTMD = Path("vendor/llama.cpp/tools/mtmd")


@contextlib.contextmanager
def serving(body: bytes) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that answers every GET with `body`; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/llama_cpp_python-{llama_sources.VERSION}.tar.gz"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llama_sources.prepare(tmp_path_factory.mktemp("sources"), SDIST)


@pytest.mark.usefixtures("socket_enabled")  # to 127.0.0.1 only
def test_the_sdist_is_fetched_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(SDIST.read_bytes()) as url:
        monkeypatch.setattr(llama_sources, "SDIST_URL", url)
        got = llama_sources.fetch_sdist(tmp_path)
    assert got.read_bytes() == SDIST.read_bytes()


@pytest.mark.usefixtures("socket_enabled")
def test_a_tampered_sdist_is_refused_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serving(b"not the sdist") as url:
        monkeypatch.setattr(llama_sources, "SDIST_URL", url)
        with pytest.raises(llama_sources.SourceError, match="SHA-256"):
            llama_sources.fetch_sdist(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_patched_sources_carry_the_omni_audio_fix(patched: Path) -> None:
    assert patched.name == "llama_cpp_python-0.3.36+sarai2"
    assert '__version__ = "0.3.36+sarai2"' in (patched / "llama_cpp" / "__init__.py").read_text()
    assert "hparams.audio_window_frames = 200;" in (patched / MTMD / "clip.cpp").read_text()
    assert "split_valid_frames(out_full, n_samples, output)" in (patched / MTMD / "mtmd-audio.cpp").read_text()
    assert "(n_frames + 1) / 2" in (patched / MTMD / "models" / "whisper-enc.cpp").read_text()


def test_a_patch_that_does_not_match_fails_loudly(patched: Path) -> None:
    diff = "--- a/llama_cpp/__init__.py\n+++ b/llama_cpp/__init__.py\n@@ -1,1 +1,1 @@\n-no such line\n+x\n"
    with pytest.raises(llama_sources.SourceError, match="does not match"):
        llama_sources.apply_patch(patched, diff)


def test_the_digest_follows_the_patch_set(monkeypatch: pytest.MonkeyPatch) -> None:
    before = llama_sources.patch_digest()
    monkeypatch.setattr(llama_sources, "LOCAL_LABEL", "sarai99")
    assert llama_sources.patch_digest() != before
