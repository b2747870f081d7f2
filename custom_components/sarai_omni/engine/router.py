"""The routing policy: which model answers a request, and why. A pure function, no I/O.

Order of rules (first match wins):
1. an explicit model request (`fast` / `quality`);
2. image, audio or video attached -> quality;
3. text that names images/cameras/video (es + en) -> quality;
4. short (< `short_chars`) and conversational (soft score > `soft_threshold`) -> fast;
5. long (>= `short_chars`) and analytical (soft score < `soft_threshold`) -> quality (the seed: "7B for
   long creative generation and deep reasoning"), when it is resident or can be loaded within the
   budget; otherwise fast, and the reasons say why;
6. default -> fast.
When the quality model is not configured or cannot fit the RAM budget, vision goes to the fast model
if it has a vision projector, and the reasons say so.

The soft score (0..1) measures how much a turn reads like small talk or a home command rather than
a task that needs the bigger model: it starts at 0.5, +0.4 for a greeting/courtesy/home-command
marker, +0.1 for at most 12 words, -0.4 for an analysis marker ("explain", "analiza", "compara",
"por qué", "step by step", ...). Markers are whole words or phrases in Spanish and English; the text
is lower-cased and stripped of accents first, so "¿Qué tal?" and "que tal" score alike.
"""

from __future__ import annotations

from dataclasses import dataclass
import re
import unicodedata

from . import defaults

FAST, QUALITY = "fast", "quality"
ROLES = (FAST, QUALITY)
VISION_MODALITIES = frozenset({"image", "video"})
MODALITIES = frozenset({"image", "audio", "video"})

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
class Availability:
    """What the model pool can serve right now."""

    quality: bool = False  # configured and able to fit the RAM budget
    quality_why_not: str = "not configured"
    fast_vision: bool = False  # the fast model has a vision projector
    quality_audio: bool = True  # the quality model's projector has an audio encoder
    fast_audio: bool = False  # the fast model's projector has an audio encoder


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The model role chosen and the reasons, in the order the rules fired."""

    role: str
    reasons: tuple[str, ...]
    soft: float

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def route(
    text: str,
    modalities: frozenset[str] | set[str] = frozenset(),
    requested: str | None = None,
    availability: Availability = Availability(),
    config: RouterConfig = RouterConfig(),
) -> RouteDecision:
    """Choose `fast` or `quality` for one request."""
    soft = soft_score(text)
    if requested in ROLES:
        return RouteDecision(requested, (f"explicit request for the {requested} model",), soft)
    if media := sorted(set(modalities) & MODALITIES):
        return _to_quality(f"{'/'.join(media)} attached", set(media), availability, soft)
    if words := sorted(set(_VISION_RE.findall(normalize(text)))):
        return _to_quality(f"the text mentions {', '.join(words)}", set(), availability, soft)
    if len(text) < config.short_chars and soft > config.soft_threshold:
        return RouteDecision(FAST, (f"short conversational turn (soft score {soft:.2f})",), soft)
    if len(text) >= config.short_chars and soft < config.soft_threshold:
        why = f"long analytical turn ({len(text)} chars, soft score {soft:.2f})"
        if availability.quality:
            return RouteDecision(QUALITY, (why, "quality model"), soft)
        return RouteDecision(FAST, (why, f"quality model {availability.quality_why_not}: fast model"), soft)
    return RouteDecision(FAST, (f"default (soft score {soft:.2f})",), soft)


def _to_quality(why: str, media: set[str], avail: Availability, soft: float) -> RouteDecision:
    if avail.quality and ("audio" not in media or avail.quality_audio):
        return RouteDecision(QUALITY, (why, "quality model"), soft)
    missing = f"quality model {avail.quality_why_not}" if not avail.quality else "quality model does not hear"
    if "audio" in media and avail.fast_audio:
        return RouteDecision(FAST, (why, missing, "the fast model's projector hears"), soft)
    if media & VISION_MODALITIES or not media:
        if avail.fast_vision:
            return RouteDecision(FAST, (why, missing, "the fast model has a vision projector"), soft)
        return RouteDecision(FAST, (why, missing, "no vision projector on the fast model: text only"), soft)
    return RouteDecision(FAST, (why, missing, "no model here hears audio: text only"), soft)
