"""Flow steps that put a role on an OpenAI-compatible server, shared by the setup flow (the default
roles) and the model-role subentry flow: `remote` asks the server's URL (and API key) and lists its
models, `remote_model` which of them plays the role and whether it takes images or audio (llama-server's
/props pre-fills that). When every role asked for is settled, the flow goes on at `_servers_settled`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import logging
from typing import Any

from homeassistant.data_entry_flow import FlowHandler, FlowResult
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from .const import CONF_API_KEY, CONF_AUDIO, CONF_MORE_URLS, CONF_REMOTE_MODEL, CONF_URL, CONF_VISION
from .engine import RemoteAuthFailed, RemoteError, list_models, probe_modalities
from .flow_schemas import normalized, remote_model_schema, remote_schema, valid_url

_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class Servers:
    """The roles a flow sends to a server: what is settled, what is still to ask."""

    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> url, api_key, model, ...
    todo: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # what the server being asked about lists
    pending: dict[str, Any] = field(default_factory=dict)  # its url and key, until a model is chosen

    def plan(self, roles: list[str], known: dict[str, dict[str, Any]]) -> None:
        """Ask for each of `roles` not settled in this flow yet; what was set before is suggested."""
        self.settings = {r: v for r, v in self.settings.items() if r in roles}
        self.todo = [r for r in roles if r not in self.settings]
        self.pending = {r: dict(known[r]) for r in roles if r in known}


class ServerSteps[ResultT: FlowResult[Any, Any]](FlowHandler[Any, ResultT, Any]):
    _servers: Servers

    async def _servers_settled(self) -> ResultT:
        raise NotImplementedError

    async def async_step_remote(self, user_input: dict[str, Any] | None = None) -> ResultT:
        """The server of the next role to settle: its URL (and API key); its models are listed."""
        servers, errors = self._servers, {}
        role = servers.todo[0]
        if user_input is not None:
            data = normalized(user_input)
            url = str(data[CONF_URL]).rstrip("/")
            more = [m for m in (str(u).strip().rstrip("/") for u in data.pop(CONF_MORE_URLS, None) or ()) if m]
            if not valid_url(url):
                errors[CONF_URL] = "invalid_url"
            elif not all(valid_url(m) for m in more):
                errors[CONF_MORE_URLS] = "invalid_url"
            else:
                try:
                    servers.models = await list_models(async_get_clientsession(self.hass), url, data.get(CONF_API_KEY))
                except RemoteAuthFailed:
                    errors = {"base": "invalid_auth"}
                except RemoteError as err:
                    _LOGGER.debug("Server check failed: %s", err)
                    errors = {"base": "cannot_connect"}
                else:
                    pending = {**servers.pending.get(role, {}), **data}
                    servers.pending[role] = pending | {CONF_URL: url, CONF_MORE_URLS: more}
                    return await self.async_step_remote_model()
        values = user_input or servers.pending.get(role) or next(iter(servers.settings.values()), {})
        return self.async_show_form(
            step_id="remote",
            data_schema=self.add_suggested_values_to_schema(remote_schema(), values),
            errors=errors,
            description_placeholders={"role": role},
        )

    async def async_step_remote_model(self, user_input: dict[str, Any] | None = None) -> ResultT:
        """Which of the server's models plays the role, and whether it takes images or audio."""
        servers, errors = self._servers, {}
        role = servers.todo[0]
        server = servers.pending[role]
        if user_input is not None:
            if user_input[CONF_REMOTE_MODEL] not in servers.models:
                errors[CONF_REMOTE_MODEL] = "model_not_found"
            elif elsewhere := await self._lacking(server, user_input[CONF_REMOTE_MODEL]):
                errors[CONF_REMOTE_MODEL] = "model_not_on_every_server"
                server = {**server, "lacking": elsewhere}
            else:
                servers.settings[role] = {
                    CONF_URL: server[CONF_URL],
                    CONF_API_KEY: server.get(CONF_API_KEY, ""),
                    **{k: user_input[k] for k in (CONF_REMOTE_MODEL, CONF_VISION, CONF_AUDIO)},
                }
                if server.get(CONF_MORE_URLS):
                    servers.settings[role][CONF_MORE_URLS] = list(server[CONF_MORE_URLS])
                servers.todo.pop(0)
                if servers.todo:
                    return await self.async_step_remote()
                return await self._servers_settled()
        values = user_input or {
            CONF_REMOTE_MODEL: server.get(CONF_REMOTE_MODEL) or (servers.models[0] if servers.models else ""),
            **await self._modalities(server),
        }
        return self.async_show_form(
            step_id="remote_model",
            data_schema=self.add_suggested_values_to_schema(remote_model_schema(servers.models), values),
            errors=errors,
            description_placeholders={
                "role": role,
                "server": server[CONF_URL],
                "models": ", ".join(servers.models),
                "lacking": server.get("lacking", ""),
            },
        )

    async def _lacking(self, server: dict[str, Any], model: str) -> str:
        """The role's other servers that answer without listing `model` (one that is off now is kept)."""
        session = async_get_clientsession(self.hass)
        lacking = []
        for url in server.get(CONF_MORE_URLS) or ():
            try:
                if model not in await list_models(session, url, server.get(CONF_API_KEY)):
                    lacking.append(url)
            except RemoteError as err:
                _LOGGER.debug("%s does not answer now (kept: the same model is expected there): %s", url, err)
        return ", ".join(lacking)

    async def _modalities(self, server: dict[str, Any]) -> dict[str, bool]:
        """What was set before, else what the server says of its model (llama-server's /props)."""
        if CONF_VISION in server:
            return {CONF_VISION: bool(server[CONF_VISION]), CONF_AUDIO: bool(server.get(CONF_AUDIO))}
        probed = await probe_modalities(async_get_clientsession(self.hass), server[CONF_URL], server.get(CONF_API_KEY))
        return {CONF_VISION: probed.get("vision", False), CONF_AUDIO: probed.get("audio", False)}
