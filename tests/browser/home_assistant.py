"""A real Home Assistant process on 127.0.0.1 for the browser tests (`hass -c` on a throwaway config).

Onboarding is finished the way a person finishes it, except that the steps after the first user are
marked done in its storage before boot (they would set up weather, radio and TTS integrations that
need the internet). The user is created through the onboarding API; the browser logs in as them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import time
from typing import Any
import urllib.error
import urllib.parse
import urllib.request

from scripts.demo_driver import HASS, free_port, make_config_dir

BOOT_GUARD_S = 180.0  # a guard against a hang, not a measurement
USER, PASSWORD = "sarai", "sarai-browser-test-1"
ONBOARDED_LATER = ["core_config", "analytics", "integration"]


class HomeAssistant:
    """`hass` in its own process: REST and the owner's token for setup steps the browser does not test."""

    def __init__(self, folder: Path, models_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = make_config_dir(folder, self.port)
        self.models_dir = models_dir
        self.token = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HomeAssistant:
        storage = self.config / ".storage"
        storage.mkdir(exist_ok=True)  # may hold what an earlier release stored (tests/test_upgrade.py)
        onboarding = {"version": 4, "minor_version": 1, "key": "onboarding", "data": {"done": ONBOARDED_LATER}}
        (storage / "onboarding").write_text(json.dumps(onboarding))
        self.boot()
        self._create_owner()
        return self

    def restart(self) -> HomeAssistant:
        """Stop and boot again on the same config and storage (the owner's token stays valid)."""
        self.stop()
        self.boot()
        return self

    def boot(self) -> None:
        env = {
            **os.environ,
            "SARAI_MODELS_DIR": str(self.models_dir),
            "SARAI_MEDIA_DIR": str(self.models_dir),
            "SARAI_HTTP_PORT": str(self.port),
        }
        with (self.config / "hass.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(HASS), "-c", str(self.config), "--skip-pip"],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        self._wait_up()

    def stop(self) -> None:
        """End the process this object started, by its PID."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log_tail(self) -> str:
        return (self.config / "hass.log").read_text(errors="replace")[-3000:]

    def request(
        self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None, timeout: float = 60
    ) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def remove_entries(self, domain: str) -> None:
        for entry in self.request("GET", f"/api/config/config_entries/entry?domain={domain}"):
            self.request("DELETE", f"/api/config/config_entries/entry/{entry['entry_id']}")

    def states(self, prefix: str) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.request("GET", "/api/states") if s["entity_id"].startswith(prefix)}

    def _wait_up(self) -> None:
        assert self.process is not None
        guard = time.monotonic() + BOOT_GUARD_S
        while time.monotonic() < guard:
            if self.process.poll() is not None:
                raise RuntimeError(f"Home Assistant exited ({self.process.returncode}): {self.log_tail()}")
            try:
                self.request("GET", "/api/" if self.token else "/api/onboarding")  # onboarded: no onboarding API
                return
            except urllib.error.URLError, ConnectionError, TimeoutError:
                time.sleep(0.25)
        raise RuntimeError(f"Home Assistant did not answer within {BOOT_GUARD_S} s: {self.log_tail()}")

    def _create_owner(self) -> None:
        client_id = self.base + "/"
        user = self.request(
            "POST",
            "/api/onboarding/users",
            {"client_id": client_id, "name": "Sarai", "username": USER, "password": PASSWORD, "language": "en"},
        )
        grant = {"grant_type": "authorization_code", "code": user["auth_code"], "client_id": client_id}
        self.token = self.request("POST", "/auth/token", form=grant)["access_token"]
