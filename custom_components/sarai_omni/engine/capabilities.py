"""What a role can do, by name (files.py reads them from a model's files; a configuration may declare them).

Model capabilities: `chat` (generates text), `tools` (its chat template lists tools: it was trained to
call them), `see` (images; a projector with a vision encoder), `hear` (audio; one with an audio
encoder), `speak` (a talker and voices). The backend adds what it can enforce on any model:
`grammar` and `json_schema` constraints (CONSTRAINTS). The router chooses among roles by these, and a
request that needs one the chosen role lacks is refused with a clear error, never degraded.
"""

from __future__ import annotations

CHAT, TOOLS, SEE, HEAR, SPEAK = "chat", "tools", "see", "hear", "speak"
MODEL_CAPABILITIES = (CHAT, TOOLS, SEE, HEAR, SPEAK)
GRAMMAR, JSON_SCHEMA = "grammar", "json_schema"
CONSTRAINTS = (GRAMMAR, JSON_SCHEMA)
# What each modality of a request needs of the model that answers it.
NEEDED_FOR = {"image": SEE, "video": SEE, "audio": HEAR}
