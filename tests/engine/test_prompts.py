"""Chat formats and stop strings."""

from __future__ import annotations

import pytest

from custom_components.sarai_omni.engine.errors import InvalidInput
from custom_components.sarai_omni.engine.prompts import COMPLETION_STOPS, StopMatcher, drop_oldest_turn, render_prompt
from tests.tiny_models import CHATML_TEMPLATE

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hola"},
    {"role": "assistant", "content": "¡Hola!"},
    {"role": "user", "content": "¿Qué tal?"},
]


def test_chatml_template_renders_like_qwen() -> None:
    prompt = render_prompt(CHAT, CHATML_TEMPLATE, eos_token="<|im_end|>")
    assert prompt.format == "template"
    assert prompt.text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHola<|im_end|>\n"
        "<|im_start|>assistant\n¡Hola!<|im_end|>\n<|im_start|>user\n¿Qué tal?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_with_tools_lists_them() -> None:
    tool = {"type": "function", "function": {"name": "HassTurnOn", "parameters": {"type": "object"}}}
    prompt = render_prompt(CHAT[:2], CHATML_TEMPLATE, tools=[tool])
    assert "<tools>\n" in prompt.text
    assert '"name": "HassTurnOn"' in prompt.text


def test_missing_template_falls_back_to_completion_prompt() -> None:
    prompt = render_prompt(CHAT, None)
    assert prompt.format == "completion"
    assert prompt.text == "Be brief.\n\nUser: Hola\nAssistant: ¡Hola!\nUser: ¿Qué tal?\nAssistant:"
    assert prompt.stops == COMPLETION_STOPS


def test_context_lines_per_format() -> None:
    chat = [
        CHAT[0],
        {**CHAT[1], "context": "Current time is 10:00:00."},
        CHAT[2],
        {**CHAT[3], "context": "Current time is 10:01:00."},
    ]
    template = render_prompt(chat, CHATML_TEMPLATE).text
    assert "user\nCurrent time is 10:00:00.\nHola<|im_end|>" in template  # each turn keeps its own time
    assert "user\nCurrent time is 10:01:00.\n¿Qué tal?<|im_end|>" in template
    completion = render_prompt(chat, None).text
    assert completion.startswith("Be brief.\nCurrent time is 10:01:00.\n\nUser: Hola\n")  # newest, in the preamble
    assert "10:00:00" not in completion


def test_broken_template_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="chat template failed"):
        render_prompt(CHAT, "{% if %}")


def test_stop_matcher_holds_back_a_split_stop_string() -> None:
    matcher = StopMatcher(["\nUser:"])
    shown = [matcher.feed(d) for d in ["Paris is", " the capital.", "\nUs", "er: and"]]
    assert shown == ["Paris is", " the capital.", "", ""]
    assert matcher.stopped


def test_stop_matcher_releases_a_false_alarm() -> None:
    matcher = StopMatcher(["\nUser:"])
    assert matcher.feed("one\nU") == "one"
    assert matcher.feed("nits") == "\nUnits"
    assert matcher.feed("\n") == ""
    assert matcher.flush() == "\n"
    assert not matcher.stopped


def test_drop_oldest_turn_keeps_system_and_last() -> None:
    assert drop_oldest_turn(CHAT) == [CHAT[0], CHAT[3]]  # the orphaned reply goes too
    with pytest.raises(InvalidInput, match="does not fit"):
        drop_oldest_turn([CHAT[0], CHAT[3]])
