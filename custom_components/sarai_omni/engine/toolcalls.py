"""Qwen-style tool calls in a token stream: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

The parser is fed text deltas as they stream and returns events: plain text (safe to show), complete
tool calls, and malformed ones (reported back to the model, never shown to the user). Tags may be
split across deltas; several calls may follow each other in one turn.
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadToolCall:
    """A tool call the model got wrong; `reason` goes back to the model as the tool's error."""

    raw: str
    reason: str
    name: str | None = None


Event = TextPart | ToolCall | BadToolCall


def parse_call(body: str) -> ToolCall | BadToolCall:
    """Parse the JSON between the tags."""
    try:
        data = json.loads(body, strict=False)  # tolerate raw control characters inside strings
    except json.JSONDecodeError as err:
        return BadToolCall(body, f"the tool call is not valid JSON ({err.msg} at char {err.pos})")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return BadToolCall(body, 'the tool call must be an object with a "name" string')
    args = data.get("arguments", {})
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = json.loads(args, strict=False) if args.strip() else {}
        except json.JSONDecodeError:
            return BadToolCall(body, '"arguments" is not a JSON object', data["name"])
    if not isinstance(args, dict):
        return BadToolCall(body, '"arguments" must be a JSON object', data["name"])
    return ToolCall(data["name"], args)


class ToolCallParser:
    """Incremental splitter of text and tool calls."""

    def __init__(self) -> None:
        self._buffer = ""
        self._in_call = False

    def feed(self, delta: str) -> list[Event]:
        self._buffer += delta
        events: list[Event] = []
        while True:
            if self._in_call:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return events
                events.append(parse_call(self._buffer[:end].strip()))
                self._buffer, self._in_call = self._buffer[end + len(CLOSE) :], False
                continue
            start = self._buffer.find(OPEN)
            if start < 0:
                keep = _partial_tag(self._buffer)
                text, self._buffer = self._buffer[: len(self._buffer) - keep], self._buffer[len(self._buffer) - keep :]
                if text:
                    events.append(TextPart(text))
                return events
            if self._buffer[:start]:
                events.append(TextPart(self._buffer[:start]))
            self._buffer, self._in_call = self._buffer[start + len(OPEN) :], True

    def flush(self) -> list[Event]:
        """End of stream: an unterminated call is parsed as is (models often end at EOS)."""
        rest, self._buffer = self._buffer, ""
        if self._in_call:
            self._in_call = False
            return [parse_call(rest.strip())] if rest.strip() else [BadToolCall(rest, "the tool call is empty")]
        return [TextPart(rest)] if rest else []


def _partial_tag(text: str) -> int:
    """Length of the tail of `text` that could be the start of an opening tag."""
    for size in range(min(len(text), len(OPEN) - 1), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size
    return 0


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON schema of one valid call to any of `tools` (OpenAI function format).

    Used to constrain decoding (llama.cpp grammar from this schema, inside the tags) on the retry
    after a malformed call: the name must be a real tool and the arguments must match its schema.
    Free turns stay unconstrained: a grammar on every token costs speed and would forbid plain text.
    """
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool["function"]["name"]},
                "arguments": tool["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    return variants[0] if len(variants) == 1 else {"oneOf": variants}
