"""What a server says before any answer: the models it lists, what its model takes (llama-server's
/props), and its HTTP errors as the engine's typed errors."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ...errors import InvalidInput, RemoteAuthFailed, RemoteError, RemoteLoading, RemoteUnreachable
from ...spec import server_label

LIST_TIMEOUT_S = 10.0


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def list_models(session: aiohttp.ClientSession, base_url: str, api_key: str | None = None) -> list[str]:
    """The model ids a server lists at /v1/models; raises RemoteUnreachable / RemoteAuthFailed / RemoteError."""
    url = f"{base_url.rstrip('/')}/models"
    try:
        async with session.get(
            url, headers=headers(api_key), timeout=aiohttp.ClientTimeout(total=LIST_TIMEOUT_S)
        ) as resp:
            await raise_for_status(resp, server_label(base_url))
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as err:
        raise RemoteUnreachable(f"{server_label(base_url)} did not answer /models: {reason(err)}") from err
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise RemoteUnreachable(f"{server_label(base_url)} does not answer like an OpenAI-compatible server")
    return [str(m["id"]) for m in models if isinstance(m, dict) and "id" in m]


async def props(session: aiohttp.ClientSession, base_url: str, api_key: str | None = None) -> dict[str, Any]:
    """llama-server's `/props` (its model, modalities, slots); {} from servers without it."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        async with session.get(
            f"{root}/props", headers=headers(api_key), timeout=aiohttp.ClientTimeout(total=LIST_TIMEOUT_S)
        ) as resp:
            data = await resp.json(content_type=None) if resp.status == 200 else {}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def probe_modalities(
    session: aiohttp.ClientSession, base_url: str, api_key: str | None = None
) -> dict[str, bool]:
    """What llama-server says the loaded model takes (`/props` modalities); {} where not told."""
    modalities = (await props(session, base_url, api_key)).get("modalities")
    return (
        {k: bool(v) for k, v in modalities.items() if k in ("vision", "audio")} if isinstance(modalities, dict) else {}
    )


async def raise_for_status(resp: aiohttp.ClientResponse, server: str) -> None:
    if resp.status < 400:
        return
    if resp.status == 503:
        raise await not_ready(resp, server)
    body = await resp.text()
    if resp.status in (401, 403):
        raise RemoteAuthFailed(f"{server} refused the API key (HTTP {resp.status})")
    if (error := _error_of(body)).get("type") == "exceed_context_size_error":  # llama-server's own words
        raise InvalidInput(
            f"the prompt ({error.get('n_prompt_tokens', '?')} tokens) is longer than the context of the model "
            f"on {server} ({error.get('n_ctx', '?')} tokens): start that server with a larger --ctx-size"
        )
    raise RemoteError(f"{server} answered HTTP {resp.status}: {body[:300]}")


def _error_of(body: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


async def not_ready(resp: aiohttp.ClientResponse, server: str) -> RemoteUnreachable:
    """A 503: the server is up but cannot answer yet (llama-server says "Loading model")."""
    try:
        said = str(_error_of(await resp.text()).get("message", ""))
    except aiohttp.ClientError:
        said = ""
    if "loading" in said.lower():
        return RemoteLoading(f"{server} is still loading its model (HTTP 503)")
    return RemoteUnreachable(f"{server} is not ready (HTTP 503{': ' + said if said else ''})")


def reason(err: BaseException) -> str:
    return str(err) or type(err).__name__
