"""The engine's messages in the OpenAI chat format, and a streamed answer's SSE chunks back into text
deltas, native tool calls (handed on as Qwen <tool_call> text: one parser serves every backend) and
the final `Generated` with the server's own figures (usage, llama-server's timings)."""

from __future__ import annotations

import base64
import json
import mimetypes
from pathlib import Path
import time
from typing import Any

from ...errors import InvalidInput
from ...prompts import Message, text_of
from ...spec import RemoteModel
from ..base import Generated


def openai_messages(messages: list[Message], remote: RemoteModel) -> list[dict[str, Any]]:
    """The engine's messages in the OpenAI format (blocking: reads attached media files)."""
    return [_openai_message(m, remote) for m in messages]


def _openai_message(msg: Message, remote: RemoteModel) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg["role"]}
    content = msg.get("content")
    if isinstance(content, list):
        out["content"] = [_part(p, remote) for p in content]
        if msg.get("context"):
            out["content"].insert(0, {"type": "text", "text": f"{msg['context']}\n"})
    else:
        text = text_of(content)
        out["content"] = f"{msg['context']}\n{text}" if msg.get("context") else text
    if msg.get("tool_calls"):
        out["tool_calls"] = [
            {**call, "function": {**call["function"], "arguments": _arguments_text(call["function"]["arguments"])}}
            for call in msg["tool_calls"]
        ]
    if msg["role"] == "tool":
        out["tool_call_id"] = msg.get("tool_call_id", "")
    return out


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _part(part: dict[str, Any], remote: RemoteModel) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "image":
        if not remote.vision:
            raise InvalidInput(f"the server's model {remote.model} is not configured to take images")
        path = Path(str(part["path"]))
        mime = mimetypes.guess_type(path.name)[0] or "image/jpeg"
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{_b64(path)}"}}
    if kind == "audio":
        if not remote.audio:
            raise InvalidInput(f"the server's model {remote.model} is not configured to take audio")
        path = Path(str(part["path"]))
        return {"type": "input_audio", "input_audio": {"data": _b64(path), "format": path.suffix.lstrip(".") or "wav"}}
    return {"type": "text", "text": str(part.get("text", ""))}


def _b64(path: Path) -> str:
    try:
        return base64.b64encode(path.read_bytes()).decode()
    except OSError as err:
        raise InvalidInput(f"cannot read {path.name}: {err.strerror}") from err


def as_tool_call_text(calls: dict[int, dict[str, str]]) -> str:
    """Native tool_calls deltas (gathered by index) as the Qwen text the tool-call parser reads."""
    out = []
    for _, call in sorted(calls.items()):
        try:
            arguments: Any = json.loads(call["arguments"] or "{}")
        except ValueError:
            arguments = call["arguments"]  # the parser reports it as malformed: the model retries
        out.append(f"<tool_call>\n{json.dumps({'name': call['name'], 'arguments': arguments})}\n</tool_call>")
    return "".join(out)


class StreamState:
    """What one streamed answer has said so far."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first_at = 0.0
        self.last_at = 0.0
        self.chunks = 0
        self.finish_reason = ""
        self.calls: dict[int, dict[str, str]] = {}
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}

    def text_of(self, chunk: dict[str, Any]) -> str:
        """Record one SSE chunk; return its text delta."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        choices = chunk.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        delta = choice.get("delta") or {}
        for call in delta.get("tool_calls") or []:
            self._add_call(call)
        text = delta.get("content") or ""
        if text or delta.get("tool_calls"):
            now = time.perf_counter()
            self.first_at = self.first_at or now
            self.last_at = now
            self.chunks += 1
        return str(text)

    def _add_call(self, call: dict[str, Any]) -> None:
        slot = self.calls.setdefault(int(call.get("index", len(self.calls))), {"name": "", "arguments": ""})
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""

    def result(self) -> Generated:
        completion = int(self.usage.get("completion_tokens") or self.timings.get("predicted_n") or self.chunks)
        decode_s = self.last_at - self.first_at
        tps = float(self.timings.get("predicted_per_second") or 0.0)
        if not tps and completion > 1 and decode_s > 0:
            tps = (completion - 1) / decode_s
        if "prompt_n" in self.timings:  # llama-server: what it evaluated, and what its cache held
            cached = int(self.timings.get("cache_n") or 0)
            evaluated = int(self.timings["prompt_n"])
            total = evaluated + cached
        else:  # OpenAI's usage: the whole prompt, of which some was cached
            total = int(self.usage.get("prompt_tokens") or 0)
            cached = int((self.usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            evaluated = total - cached
        return Generated(
            finish_reason="tool_calls" if self.calls else (self.finish_reason or "stop"),
            completion_tokens=completion,
            ttft_ms=((self.first_at or time.perf_counter()) - self.started) * 1000,
            tokens_per_second=tps,
            prompt_tokens=total,
            cached_tokens=cached,
            evaluated_prompt_tokens=evaluated,
        )
