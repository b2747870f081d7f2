"""The llama-cpp-python sources this project builds: the pinned sdist with the project's patches.

Standard library only (scripts/setup runs it as a script; the config flow's installer imports it):
the sdist is fetched from PyPI (or taken from a file), checked against its pinned SHA-256, unpacked,
and the patches under patches/ applied; the version gets the local label `+sarai2`, so a build of
these sources is told apart from PyPI's (`llama_cpp.__version__`), and `==0.3.36` still matches it.

    python llama_sources.py DEST [--sdist-cache DIR]   # prints the patched source folder

Blocking (downloads, file I/O): HA runs it in the executor.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
import hashlib
from pathlib import Path
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request

VERSION = "0.3.36"
LOCAL_LABEL = "sarai2"  # bump with the patch set
SDIST_URL = (
    "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/"
    f"llama_cpp_python-{VERSION}.tar.gz"
)
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PATCHES = Path(__file__).resolve().parent / "patches"
DOWNLOAD_TIMEOUT_S = 120
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


class SourceError(Exception):
    """The sources could not be fetched, checked or patched (the message says which)."""


def patched_version() -> str:
    return f"{VERSION}+{LOCAL_LABEL}"


def patch_files() -> list[Path]:
    return sorted(PATCHES.glob(f"llama-cpp-python-{VERSION}-*.patch"))


def patch_digest() -> str:
    """Short hash of the patch set: build caches keyed by it rebuild when a patch changes."""
    digest = hashlib.sha256(LOCAL_LABEL.encode())
    for path in patch_files():
        digest.update(path.read_bytes())
    return digest.hexdigest()[:8]


def fetch_sdist(folder: Path) -> Path:
    """The sdist in `folder` (downloaded once), checked against its pinned hash."""
    url, sha256 = SDIST_URL, SDIST_SHA256
    path = folder / f"llama_cpp_python-{VERSION}.tar.gz"
    if path.is_file() and _sha256(path) == sha256:  # downloaded before
        return path
    folder.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer, part.open("wb") as out:
            shutil.copyfileobj(answer, out)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise SourceError(f"could not download {url}: {err}") from err
    part.replace(path)
    if (got := _sha256(path)) != sha256:
        path.unlink(missing_ok=True)
        raise SourceError(f"{url} has SHA-256 {got}, expected {sha256}")
    return path


def prepare(dest: Path, sdist: Path) -> Path:
    """Unpack `sdist` under `dest` and patch it; returns the source folder (replaced if there)."""
    if _sha256(sdist) != SDIST_SHA256:
        raise SourceError(f"{sdist} is not the llama-cpp-python {VERSION} sdist this project patches")
    root = dest / f"llama_cpp_python-{patched_version()}"
    shutil.rmtree(root, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:  # same file system: the rename is atomic
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        Path(tmp, f"llama_cpp_python-{VERSION}").rename(root)
    for patch in patch_files():
        apply_patch(root, patch.read_text())
    _label_version(root / "llama_cpp" / "__init__.py")
    return root


@dataclass
class _Hunk:
    start: int  # 1-based line of the old text
    old: list[str]
    new: list[str]


def apply_patch(root: Path, text: str) -> None:
    """Apply a unified diff (paths a/... b/...) under `root`; every hunk must match exactly."""
    for target, hunks in _parse(text).items():
        path = root / target
        lines = path.read_text().splitlines(keepends=True)
        shift = 0
        for hunk in hunks:
            at = _find(lines, hunk, hunk.start - 1 + shift)
            lines[at : at + len(hunk.old)] = hunk.new
            shift += len(hunk.new) - len(hunk.old)
        path.write_text("".join(lines))


def _parse(text: str) -> dict[str, list[_Hunk]]:
    files: dict[str, list[_Hunk]] = {}
    hunks: list[_Hunk] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("+++ "):
            hunks = files.setdefault(line[4:].strip().split("\t")[0].removeprefix("b/"), [])
        elif match := _HUNK.match(line):
            hunks.append(_Hunk(int(match[1]), [], []))
        elif hunks and line[:1] in (" ", "-", "+") and not line.startswith("--- "):
            body = line[1:] if line.endswith("\n") else line[1:] + "\n"
            if line[0] != "+":
                hunks[-1].old.append(body)
            if line[0] != "-":
                hunks[-1].new.append(body)
    if not files:
        raise SourceError("the patch names no file")
    return files


def _find(lines: list[str], hunk: _Hunk, near: int) -> int:
    """Where the hunk's old text is, nearest to the line it names."""
    size = len(hunk.old)
    for distance in range(len(lines)):
        for at in (near - distance, near + distance):
            if 0 <= at <= len(lines) - size and lines[at : at + size] == hunk.old:
                return at
    raise SourceError(f"a hunk of the patch does not match its file (near line {hunk.start})")


def _label_version(init: Path) -> None:
    text = init.read_text()
    line = f'__version__ = "{VERSION}"'
    if line not in text:
        raise SourceError(f"{init} does not say {line}")
    init.write_text(text.replace(line, f'__version__ = "{patched_version()}"'))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="folder to unpack the patched sources into")
    parser.add_argument("--sdist-cache", type=Path, help="folder the sdist is downloaded into once (default: DEST)")
    parser.add_argument("--digest", action="store_true", help="print the patch set's digest and exit")
    parser.add_argument("--version", action="store_true", help="print the patched version's name and exit")
    args = parser.parse_args(argv)
    if args.digest or args.version:
        print(patch_digest() if args.digest else patched_version())
        return 0
    try:
        print(prepare(args.dest, fetch_sdist(args.sdist_cache or args.dest)))
    except SourceError as err:
        print(f"llama_sources: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
