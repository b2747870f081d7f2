"""Install llama-cpp-python into Home Assistant's Python with HA's own package installer.

PyPI ships llama-cpp-python as source only, so installing it compiles llama.cpp: that needs a C++
compiler, and takes minutes. What is compiled is the pinned sdist with this project's patches
(engine/llama_sources.py: Qwen2.5-Omni hears as transformers does), fetched from PyPI and checked
against its pinned hash, so a user's HA hears exactly as the tests do. Everything here blocks: run it
in the executor.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import logging
from pathlib import Path
import platform
import shutil
from typing import Any

from homeassistant.data_entry_flow import FlowHandler, FlowResult
from homeassistant.requirements import pip_kwargs
from homeassistant.util.package import install_package
import probatio

from .engine import LLAMA_CPP_VERSION, llama_sources

_LOGGER = logging.getLogger(__name__)
REQUIREMENT = f"llama-cpp-python=={LLAMA_CPP_VERSION} (patched: {llama_sources.patched_version()})"
BUILD_FOLDER = "sarai_omni_build"  # under HA's config folder while the install runs
INSTALL_TIMEOUT_S = 3600  # a source build on a small ARM box is slow
_COMPILERS = ("c++", "g++", "clang++")


TORCH_CHECK = "import torch, transformers; print(torch.__version__, transformers.__version__)"
TORCH_CHECK_TIMEOUT_S = 120  # importing torch takes seconds; a cold disk more


async def torch_problem(python: str) -> str | None:
    """Why `python` cannot run the transformers worker (None: it imports torch and transformers).

    Runs the interpreter once (never imports torch here: HA's venv has none)."""
    if not python:
        return "no Python set for the torch venv (options: torch venv Python)"
    try:
        proc = await asyncio.create_subprocess_exec(
            python, "-c", TORCH_CHECK, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as err:
        return f"{python} cannot be started: {err.strerror or err}"
    try:
        out, said = await asyncio.wait_for(proc.communicate(), TORCH_CHECK_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"{python} did not import torch within {TORCH_CHECK_TIMEOUT_S} s"
    if proc.returncode != 0:
        last = (said.decode(errors="replace").strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"{python} cannot import torch and transformers: {last}"
    _LOGGER.debug("torch venv %s: torch, transformers %s", python, out.decode().strip())
    return None


def backend_available() -> bool:
    """Whether llama-cpp-python is installed for the workers, in the release the worker is written for
    (checked without loading it; engine/worker/llamacpp/adapter.py refuses another one)."""
    importlib.invalidate_caches()  # it may have been installed since the last look
    if importlib.util.find_spec("llama_cpp") is None:
        return False
    try:
        installed = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:  # importable without its metadata: a source checkout
        return True
    return installed.split("+", 1)[0] == LLAMA_CPP_VERSION


def libc() -> str:
    """The C library of this Python ("glibc", or "musl" in Alpine-based containers)."""
    name = platform.libc_ver()[0]
    return name or "musl"  # libc_ver() only recognises glibc (and a few others); empty means musl here


def install_blocker() -> dict[str, str] | None:
    """Why an install cannot work here (placeholders for the abort message), or None."""
    if any(shutil.which(c) for c in _COMPILERS):
        return None
    return {"libc": libc(), "machine": platform.machine(), "requirement": REQUIREMENT}


INSTALLED, FAILED, RESTART = "installed", "failed", "restart"


def patched_sources(config_dir: str) -> str:
    """The patched llama-cpp-python source folder to install (downloaded and checked once)."""
    folder = Path(config_dir) / BUILD_FOLDER
    return str(llama_sources.prepare(folder, llama_sources.fetch_sdist(folder)))


def install_backend(config_dir: str) -> str:
    """pip-install the patched llama-cpp-python the way HA installs integration requirements.

    Returns INSTALLED, FAILED, or RESTART when it installed into a folder this process only reads
    at startup (HA's `deps` outside a virtualenv).
    """
    kwargs = pip_kwargs(config_dir) | {"timeout": INSTALL_TIMEOUT_S}
    try:
        source = patched_sources(config_dir)
        if not install_package(source, upgrade=False, **kwargs):
            _LOGGER.error("Installing %s failed; pip's output is in the log above", REQUIREMENT)
            return FAILED
    except llama_sources.SourceError as err:
        _LOGGER.error("Could not prepare the llama-cpp-python sources: %s", err)
        return FAILED
    finally:  # the sources (~75 MB packed) are not kept once built
        shutil.rmtree(Path(config_dir) / BUILD_FOLDER, ignore_errors=True)
    return INSTALLED if backend_available() else RESTART


class InstallSteps[ResultT: FlowResult[Any, Any]](FlowHandler[Any, ResultT, Any]):
    """Flow steps that install llama-cpp-python, shared by the config flow and the repair flow.

    `install` explains and asks (or aborts with `no_compiler` where a build cannot work),
    `installing` shows progress while HA's installer runs in the executor, then the flow goes on
    at `install_next_step`, or aborts with `install_failed` / `restart_required`.
    """

    install_next_step = "user"
    _install_task: asyncio.Task[str] | None = None

    async def async_step_install(self, user_input: dict[str, Any] | None = None) -> ResultT:
        blocker = await self.hass.async_add_executor_job(install_blocker)
        if blocker is not None:
            return self.async_abort(reason="no_compiler", description_placeholders=blocker)
        if user_input is None:
            return self.async_show_form(
                step_id="install",
                data_schema=probatio.Schema({}),
                description_placeholders={"requirement": REQUIREMENT},
            )
        return await self.async_step_installing()

    async def async_step_installing(self, user_input: dict[str, Any] | None = None) -> ResultT:
        if self._install_task is None:
            self._install_task = self.hass.async_create_task(self._install(), "sarai_omni install llama-cpp-python")
        if not self._install_task.done():
            return self.async_show_progress(
                step_id="installing", progress_action="install", progress_task=self._install_task
            )
        outcome, self._install_task = self._install_task.result(), None
        next_step = {INSTALLED: self.install_next_step, RESTART: "restart_required"}.get(outcome, "install_failed")
        return self.async_show_progress_done(next_step_id=next_step)

    async def _install(self) -> str:
        return await self.hass.async_add_executor_job(install_backend, self.hass.config.config_dir)

    async def async_step_install_failed(self, user_input: dict[str, Any] | None = None) -> ResultT:
        return self.async_abort(reason="install_failed", description_placeholders={"requirement": REQUIREMENT})

    async def async_step_restart_required(self, user_input: dict[str, Any] | None = None) -> ResultT:
        return self.async_abort(reason="restart_required")
