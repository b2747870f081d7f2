"""Constrained decoding in the llama.cpp worker: a request's GBNF grammar, or one made from its JSON schema
by llama.cpp's converter (inside <tool_call> tags for a tool-call repair)."""

from __future__ import annotations

import json
import re
from typing import Any

from ...errors import InvalidInput
from ...toolcalls import CLOSE, OPEN


def request_grammar(msg: dict[str, Any]) -> Any:
    """The request's GBNF grammar, or one built from its JSON schema (optionally inside tool-call tags)."""
    gbnf = msg.get("grammar")
    if not gbnf and msg.get("json_schema") is not None:
        gbnf = schema_grammar(msg["json_schema"], tool_call=bool(msg.get("schema_as_tool_call")))
    if not gbnf:
        return None
    from llama_cpp.llama_grammar import LlamaGrammar  # noqa: PLC0415  (worker-only import)

    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except ValueError as err:
        raise InvalidInput(f"invalid grammar: {err}") from err


def schema_grammar(schema: dict[str, Any], *, tool_call: bool = False) -> str:
    """GBNF for JSON matching `schema` (llama.cpp's converter); wrapped in <tool_call> tags if asked."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf  # noqa: PLC0415  (worker-only import)

    try:
        gbnf: str = json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise InvalidInput(f"unsupported JSON schema: {err}") from err
    if tool_call:
        gbnf = re.sub(r"^root ::=", "call ::=", gbnf, count=1, flags=re.MULTILINE)
        gbnf += f"\nroot ::= {json.dumps(OPEN + chr(10))} call {json.dumps(chr(10) + CLOSE)}\n"
    return gbnf
