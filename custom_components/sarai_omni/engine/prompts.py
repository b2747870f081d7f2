"""Chat formats: the model's own Jinja chat template, or a plain completion prompt for base models.

Only this module knows how messages become prompt text. It does not import llama.cpp, so it is
tested on its own; the worker calls `render_prompt` and feeds the text to the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
import re
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidInput

Message = dict[str, Any]

# Base models (no tokenizer.chat_template) continue a transcript; these end the assistant's turn.
COMPLETION_STOPS = ("\nUser:", "\nuser:", "\n\n\n")


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    """Prompt text plus the stop strings that end the assistant's turn."""

    text: str
    stops: tuple[str, ...]
    format: str  # "template" or "completion"


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    # The same settings Hugging Face uses for chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(value: Any) -> Any:
    """Strings in `value` with lone surrogates (valid JSON, not encodable text) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    return value


def text_of(content: Any) -> str:
    """The text of a message content (plain string or OpenAI-style list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def render_prompt(
    messages: Sequence[Message],
    chat_template: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """Render messages to prompt text, ending where the assistant's reply starts."""
    if not messages:
        raise InvalidInput("no messages")
    if chat_template is None:
        return RenderedPrompt(render_completion(messages), COMPLETION_STOPS, "completion")
    # Context lines (e.g. the time a question was asked) open their own message: stable per turn,
    # so the KV cache of the history stays valid.
    messages = [_with_context(m) for m in messages]
    try:
        text = _ENV.from_string(chat_template).render(
            messages=messages,
            tools=list(tools) if tools else None,
            add_generation_prompt=True,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except jinja2.TemplateError as err:
        raise InvalidInput(f"chat template failed: {err}") from err
    # The end-of-turn token ends generation; eos_token also covers templates that close with it.
    return RenderedPrompt(text, (eos_token,) if eos_token else (), "template")


def _with_context(msg: Message) -> Message:
    if not msg.get("context"):
        return msg
    out = {k: v for k, v in msg.items() if k != "context"}
    out["content"] = f"{msg['context']}\n{text_of(msg.get('content'))}"
    return out


def render_completion(messages: Sequence[Message]) -> str:
    """A transcript prompt for base models: a system preamble, then User:/Assistant: lines.

    Base models follow a transcript best when context lines (the current time) stand in the
    preamble, so only the newest one is kept, there.
    """
    context = next((m["context"] for m in reversed(messages) if m.get("context")), None)
    parts: list[str] = [] if context is None or messages[0].get("role") == "system" else [f"{context}\n"]
    for msg in messages:
        role, text = msg.get("role"), text_of(msg.get("content")).strip()
        if role == "system":
            parts.append(f"{text}\n{context}\n" if context else f"{text}\n")
        elif role == "user":
            parts.append(f"User: {text}")
        elif role == "assistant" and text:
            parts.append(f"Assistant: {text}")
        elif role == "tool":
            parts.append(f"Tool result: {text}")
    return "\n".join(parts) + "\nAssistant:"


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker` (held back: the
    next delta may complete it)."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class StopMatcher:
    """Streams text while holding back any tail that could be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Add generated text; return what is safe to show. Sets `stopped` on a stop string."""
        if self.stopped:
            return ""
        text = self._pending + delta
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped, self._pending = True, ""
            return text[:cut]
        hold = max((partial_suffix(text, s) for s in self._stops), default=0)
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Return held-back text at the end of generation (it was not a stop string after all)."""
        text, self._pending = self._pending, ""
        return "" if self.stopped else text


MEDIA_PARTS = ("image", "audio")


def media_parts(messages: Sequence[Message], marker: str) -> tuple[list[Message], list[str]]:
    """Replace image and audio parts ({"type": "image"|"audio", "path": ...}) by `marker` in the
    text; return their paths, in order.

    The result renders with the model's ordinary chat template; mtmd then splits the prompt at
    each marker and puts the image's embeddings there.
    """
    paths: list[str] = []
    out: list[Message] = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            text: list[str] = []
            for part in content:
                if isinstance(part, dict) and part.get("type") in MEDIA_PARTS:
                    paths.append(str(part["path"]))
                    text.append(marker)
                elif isinstance(part, dict) and part.get("type") == "text":
                    text.append(str(part.get("text", "")))
            out.append({**msg, "content": "".join(text)})
        else:
            out.append(msg)
    return out, paths


def count_parts(messages: Sequence[Message], kind: str) -> int:
    """How many parts of `kind` ("image", "audio") the messages carry."""
    return sum(
        1
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") == kind
    )


def has_media(messages: Sequence[Message]) -> bool:
    return any(count_parts(messages, kind) for kind in MEDIA_PARTS)


def drop_oldest_turn(messages: Sequence[Message]) -> list[Message]:
    """Drop the oldest non-system message (and tool results that depended on it); keep the last."""
    first = 1 if messages and messages[0].get("role") == "system" else 0
    if len(messages) - first <= 1:
        raise InvalidInput("the prompt does not fit the model's context (n_ctx)")
    rest = list(messages[first + 1 :])
    while len(rest) > 1 and rest[0].get("role") in ("tool", "assistant"):
        rest.pop(0)  # a reply or tool result without its question is noise
    return [*messages[:first], *rest]


class ThinkFilter:
    """Streams text with `<think>...</think>` reasoning (Qwen3-family models) cut out.

    A partial tag at the end of a delta is held back until the next one says what it is; an
    unclosed block at the end is dropped (it was never an answer).
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self) -> None:
        self._pending = ""
        self._inside = False

    def feed(self, delta: str) -> str:
        text, out = self._pending + delta, []
        self._pending = ""
        while text:
            tag = self.CLOSE if self._inside else self.OPEN
            at = text.find(tag)
            if at >= 0:
                if not self._inside:
                    out.append(text[:at])
                text, self._inside = text[at + len(tag) :], not self._inside
                continue
            hold = partial_suffix(text, tag)
            if not self._inside:
                out.append(text[: len(text) - hold])
            self._pending = text[len(text) - hold :] if hold else ""
            break
        return "".join(out)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return "" if self._inside else text


SENTENCE_END = re.compile(r"(?<=[.!?…\u3002\uff01\uff1f])\s+")  # punctuation, then a space (CJK stops too)
MAX_SENTENCE_CHARS = 300  # what a talker says in one go (its codes are capped per text token)


def sentences(text: str) -> list[str]:
    """`text` cut where sentences end (and long ones at a comma or space), blanks dropped."""
    out: list[str] = []
    for whole in SENTENCE_END.split(text.strip()):
        rest = whole
        while len(rest) > MAX_SENTENCE_CHARS:
            cut = max(rest.rfind(", ", 0, MAX_SENTENCE_CHARS), rest.rfind(" ", 0, MAX_SENTENCE_CHARS))
            cut = cut + 1 if cut > 0 else MAX_SENTENCE_CHARS
            out.append(rest[:cut].strip())
            rest = rest[cut:]
        out.append(rest.strip())
    return [s for s in out if s]
