"""Parsing Qwen tool calls out of a token stream."""

from __future__ import annotations

from custom_components.sarai_omni.engine.toolcalls import BadToolCall, TextPart, ToolCall, ToolCallParser

CALL = '<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "Kitchen light"}}\n</tool_call>'


def run(deltas: list[str]) -> list[object]:
    parser = ToolCallParser()
    events: list[object] = []
    for delta in deltas:
        events += parser.feed(delta)
    return events + parser.flush()


def merged_text(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextPart))


def test_tags_split_across_deltas() -> None:
    text = "Sure. " + CALL + " Done."
    for size in (1, 2, 3, 5, 7):
        events = run([text[i : i + size] for i in range(0, len(text), size)])
        assert [e for e in events if not isinstance(e, TextPart)] == [ToolCall("HassTurnOn", {"name": "Kitchen light"})]
        assert merged_text(events) == "Sure.  Done."
        assert "<" not in merged_text(events)


def test_two_calls_in_one_turn() -> None:
    second = CALL.replace("HassTurnOn", "HassTurnOff").replace("Kitchen", "Garden")
    events = run([CALL + "\n" + second])
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall("HassTurnOn", {"name": "Kitchen light"}),
        ToolCall("HassTurnOff", {"name": "Garden light"}),
    ]


def test_malformed_json_is_reported_not_shown() -> None:
    events = run(['<tool_call>{"name": "HassTurnOn", "arguments": {"name": }</tool_call>ok'])
    assert isinstance(events[0], BadToolCall)
    assert "not valid JSON" in events[0].reason
    assert merged_text(events) == "ok"


def test_wrong_shapes() -> None:
    no_name = run(['<tool_call>{"arguments": {}}</tool_call>'])[0]
    bad_args = run(['<tool_call>{"name": "X", "arguments": [1]}</tool_call>'])[0]
    assert isinstance(no_name, BadToolCall)
    assert "name" in no_name.reason
    assert isinstance(bad_args, BadToolCall)
    assert bad_args.name == "X"


def test_string_arguments_and_unterminated_call() -> None:
    events = run(['<tool_call>{"name": "HassTurnOn", "arguments": "{\\"area\\": \\"Garden\\"}"}'])
    assert events == [ToolCall("HassTurnOn", {"area": "Garden"})]


def test_unknown_tool_is_parsed_for_home_assistant_to_refuse() -> None:
    """The parser does not know the tools: HA's LLM API answers unknown names with an error result."""
    events = run(['<tool_call>{"name": "OpenThePodBayDoors", "arguments": {}}</tool_call>'])
    assert events == [ToolCall("OpenThePodBayDoors", {})]


def test_text_with_a_lone_angle_bracket_passes() -> None:
    assert merged_text(run(["a <", "b> c <tool", "box>"])) == "a <b> c <toolbox>"


def test_control_characters_inside_strings_are_tolerated() -> None:
    events = run(['<tool_call>{"name": "HassTurnOn", "arguments": {"name": "a\x17b"}}</tool_call>'])
    assert events == [ToolCall("HassTurnOn", {"name": "a\x17b"})]
