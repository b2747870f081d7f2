"""The routing policy: which role answers a request, and why. A pure function over what each role can do.

Roles are chosen by capability (capabilities.py) and policy, never by name: the *default* role is the
first pinned chat role (the resident one that answers Assist), the *deepest* ready role is the
largest one loaded on demand (unpinned before pinned, then by parameters; a server's model, whose
size is unknown here, counts as the largest). Order of rules (first match wins):
1. an explicit role request;
2. image, audio or video attached -> the deepest ready role that sees / hears what is attached;
2b. a question about what was seen before (the caller knows a memory answers it: `Needs.past`) ->
   the default role (the timeline answers; no eyes needed);
3. text that names images/cameras/video (es + en) -> the deepest ready role that sees, else the
   deepest ready one (talk about cameras is no small talk; the camera tool brings the images);
4. short (< `short_chars`) and conversational (soft score > `soft_threshold`) -> the default role;
5. long (>= `short_chars`) and analytical (soft score < `soft_threshold`) -> the deepest ready chat
   role (the seed: "7B for long creative generation and deep reasoning"), else the default one;
6. default -> the default role.
Where no role that can take the media is ready, the best one that could is named with why not, and
the request goes to a ready role that can, else to the default role in words only, and the reasons
say so. A request whose output must be constrained (a grammar, a JSON schema) goes to a role whose
backend enforces it when the rule's choice cannot (an explicit request is kept: the engine refuses it).

The soft score (0..1) measures how much a turn reads like small talk or a home command rather than
a task that needs the bigger model: it starts at 0.5, +0.4 for a greeting/courtesy/home-command
marker, +0.1 for at most 12 words, -0.4 for an analysis marker ("explain", "analiza", "compara",
"por qué", "step by step", ...). Markers are whole words or phrases in Spanish and English; the text
is lower-cased and stripped of accents first, so "¿Qué tal?" and "que tal" score alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import math
import re
import unicodedata

from . import defaults
from .capabilities import CHAT, NEEDED_FOR, SEE

MODALITIES = frozenset(NEEDED_FOR)
_VERBS = {SEE: "sees", "hear": "hears"}

_VISION_WORDS = (
    "imagen",
    "imagenes",
    "image",
    "images",
    "foto",
    "fotos",
    "photo",
    "photos",
    "picture",
    "camara",
    "camaras",
    "camera",
    "cameras",
    "video",
    "videos",
    "snapshot",
    "captura",
)
_SOFT_MARKERS = (
    "hola",
    "buenas",
    "buenos dias",
    "buenas tardes",
    "buenas noches",
    "que tal",
    "como estas",
    "gracias",
    "por favor",
    "adios",
    "hasta luego",
    "vale",
    "genial",
    "hello",
    "hi",
    "hey",
    "good morning",
    "good evening",
    "good night",
    "how are you",
    "thanks",
    "thank you",
    "please",
    "bye",
    "goodbye",
    "ok",
    "okay",
    "cool",
    "enciende",
    "apaga",
    "pon",
    "sube",
    "baja",
    "abre",
    "cierra",
    "turn on",
    "turn off",
    "switch on",
    "switch off",
    "set",
    "open",
    "close",
    "lock",
    "unlock",
    "start",
    "stop",
    "dim",
)
_HARD_MARKERS = (
    "explica",
    "explicame",
    "analiza",
    "analisis",
    "compara",
    "resume",
    "resumen",
    "por que",
    "detalla",
    "paso a paso",
    "explain",
    "analyze",
    "analyse",
    "analysis",
    "compare",
    "summarize",
    "summary",
    "why",
    "in detail",
    "step by step",
    "write",
    "escribe",
)


def _phrase_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b")


_VISION_RE, _SOFT_RE, _HARD_RE = map(_phrase_pattern, (_VISION_WORDS, _SOFT_MARKERS, _HARD_MARKERS))


def normalize(text: str) -> str:
    """Lower-case and strip accents/punctuation marks like ¿¡ for bilingual matching."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def soft_score(text: str) -> float:
    """How conversational a turn is (documented in the module docstring)."""
    norm = normalize(text)
    score = 0.5
    if _SOFT_RE.search(norm):
        score += 0.4
    if len(norm.split()) <= 12:
        score += 0.1
    if _HARD_RE.search(norm):
        score -= 0.4
    return round(min(max(score, 0.0), 1.0), 3)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Tunable thresholds (exposed in the integration's options)."""

    short_chars: int = defaults.ROUTER_SHORT_CHARS
    soft_threshold: float = defaults.ROUTER_SOFT_THRESHOLD


@dataclass(frozen=True, slots=True)
class RoleView:
    """What the router knows of one role now."""

    name: str
    capabilities: frozenset[str] = frozenset({CHAT})
    constraints: frozenset[str] = frozenset()  # what its backend can enforce on the output
    pinned: bool = False
    parameters: float = math.inf  # its model's size (unknown: a server's model counts as the largest)
    ready: bool = True  # loaded, or loadable within the budget now (and its server answers)
    why_not: str = ""  # why it is not ready

    @property
    def depth(self) -> tuple[bool, float]:
        return (not self.pinned, self.parameters)


@dataclass(frozen=True, slots=True)
class Needs:
    """What a request asks of the role that answers it."""

    text: str = ""
    modalities: frozenset[str] = frozenset()
    requested: str | None = None
    constraints: frozenset[str] = field(default_factory=frozenset)
    past: bool = False  # it asks about what was seen before, and a memory of it exists


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The role chosen and the reasons, in the order the rules fired."""

    role: str
    reasons: tuple[str, ...]
    soft: float

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def route(needs: Needs, roles: Sequence[RoleView], config: RouterConfig = RouterConfig()) -> RouteDecision:
    """Choose the role for one request among `roles` (in configuration order)."""
    soft = soft_score(needs.text)
    if needs.requested is not None:
        return RouteDecision(needs.requested, (f"explicit request for the {needs.requested} model",), soft)
    chat = [r for r in roles if CHAT in r.capabilities] or list(roles)
    default = next((r for r in chat if r.pinned), chat[0])
    if media := sorted(needs.modalities & MODALITIES):
        wanted = frozenset(NEEDED_FOR[m] for m in media)
        return _constrained(_capable(f"{'/'.join(media)} attached", wanted, chat, default), needs, chat, soft)
    if needs.past:
        why = "asks what was seen before: the timeline answers"
        return _constrained((default, (why, f"{default.name} model")), needs, chat, soft)
    if words := sorted(set(_VISION_RE.findall(normalize(needs.text)))):
        why = f"the text mentions {', '.join(words)}"
        deepest = max((r for r in chat if r.ready), key=lambda r: r.depth, default=default)
        return _constrained(_capable(why, frozenset({SEE}), chat, deepest), needs, chat, soft)
    if len(needs.text) < config.short_chars and soft > config.soft_threshold:
        return _constrained((default, (f"short conversational turn (soft score {soft:.2f})",)), needs, chat, soft)
    if len(needs.text) >= config.short_chars and soft < config.soft_threshold:
        why = f"long analytical turn ({len(needs.text)} chars, soft score {soft:.2f})"
        deepest = max(chat, key=lambda r: r.depth)
        if deepest.ready:
            return _constrained((deepest, (why, f"{deepest.name} model")), needs, chat, soft)
        chosen = (default, (why, f"{deepest.name} model {deepest.why_not}: {default.name} model"))
        return _constrained(chosen, needs, chat, soft)
    return _constrained((default, (f"default (soft score {soft:.2f})",)), needs, chat, soft)


def _capable(
    why: str, wanted: frozenset[str], chat: list[RoleView], fallback: RoleView
) -> tuple[RoleView, tuple[str, ...]]:
    """The deepest ready role with `wanted`; else a ready one that has it; else `fallback`, in words only."""
    able = sorted((r for r in chat if wanted <= r.capabilities), key=lambda r: r.depth, reverse=True)
    verbs = "/".join(_VERBS.get(c, c) for c in sorted(wanted))
    if able and able[0].ready:
        return able[0], (why, f"the {able[0].name} model {verbs}")
    missed = (f"{able[0].name} model {able[0].why_not}",) if able else ()
    if ready := next((r for r in able if r.ready), None):
        return ready, (why, *missed, f"the {ready.name} model {verbs}")
    what = ", ".join(sorted(wanted))
    return fallback, (why, *missed, f"no model here can {what} now: the {fallback.name} model, in words only")


def _constrained(
    choice: tuple[RoleView, tuple[str, ...]], needs: Needs, chat: list[RoleView], soft: float
) -> RouteDecision:
    """Keep the choice where its backend enforces what the output needs; else the best one that does."""
    role, reasons = choice
    if needs.constraints <= role.constraints:
        return RouteDecision(role.name, reasons, soft)
    able = [r for r in chat if needs.constraints <= r.constraints and r.ready]
    if not able:  # nobody can: the engine refuses it with the reason
        return RouteDecision(role.name, reasons, soft)
    other = max(able, key=lambda r: (r.capabilities >= role.capabilities, r.depth))
    why = f"{role.name} model cannot enforce {', '.join(sorted(needs.constraints))}: {other.name} model"
    return RouteDecision(other.name, (*reasons, why), soft)
