"""The routing policy (a pure function over what each role can do): the seed's rules, by capability."""

from __future__ import annotations

import pytest

from custom_components.sarai_omni.engine.capabilities import CHAT, GRAMMAR, HEAR, JSON_SCHEMA, SEE, SPEAK, TOOLS
from custom_components.sarai_omni.engine.router import Needs, RoleView, RouterConfig, route, soft_score

FAST, QUALITY = "fast", "quality"
LLAMA = frozenset({GRAMMAR, JSON_SCHEMA})
BUDGET = "does not fit the RAM budget"


def views(
    *,
    quality: bool = True,
    why: str = BUDGET,
    fast_sees: bool = False,
    fast_hears: bool = False,
    quality_hears: bool = True,
    configured: bool = True,
    extra: tuple[RoleView, ...] = (),
) -> list[RoleView]:
    """The seed's pair: a pinned 4B and a 7B loaded on demand (that sees and hears), plus `extra`."""
    fast_caps = {CHAT, TOOLS} | ({SEE} if fast_sees else set()) | ({HEAR} if fast_hears else set())
    out = [RoleView(FAST, frozenset(fast_caps), LLAMA, pinned=True, parameters=4e9)]
    if configured:
        caps = frozenset({CHAT, TOOLS, SEE} | ({HEAR} if quality_hears else set()))
        out.append(RoleView(QUALITY, caps, LLAMA, parameters=7e9, ready=quality, why_not=why))
    return out + list(extra)


BOTH = views()


@pytest.mark.parametrize(
    ("text", "role", "reason"),
    [
        ("hola, ¿qué tal?", FAST, "short conversational turn"),
        ("Hello, how are you?", FAST, "short conversational turn"),
        ("enciende la luz de la cocina", FAST, "short conversational turn"),
        ("¿Qué ves en la cámara del jardín?", QUALITY, "camara"),
        ("Describe this photo", QUALITY, "photo"),
        ("Mira el vídeo de la entrada", QUALITY, "video"),
        ("Explain step by step why the sky is blue", FAST, "default"),
    ],
)
def test_text_routes(text: str, role: str, reason: str) -> None:
    decision = route(Needs(text), BOTH)
    assert decision.role == role
    assert reason in decision.reason


def test_soft_score_is_bilingual_and_accent_blind() -> None:
    assert soft_score("¿Qué tal?") == soft_score("que tal") == 1.0
    assert soft_score("Explícame por qué el cielo es azul") < 0.8


def test_modalities_go_to_the_deepest_role_that_takes_them() -> None:
    decision = route(Needs("hola", frozenset({"image"})), BOTH)
    assert decision.role == QUALITY
    assert decision.reasons[0] == "image attached"


def test_explicit_request_wins() -> None:
    assert route(Needs("¿qué ves en la cámara?", requested=FAST), BOTH).role == FAST
    assert route(Needs("hola", requested=QUALITY), BOTH).reason == "explicit request for the quality model"


def test_vision_falls_back_to_a_ready_role_that_sees() -> None:
    decision = route(Needs("what is on the camera?", frozenset({"image"})), views(quality=False, fast_sees=True))
    assert decision.role == FAST
    assert "quality model does not fit the RAM budget" in decision.reason
    assert "the fast model sees" in decision.reason


def test_thresholds_are_configurable() -> None:
    strict = RouterConfig(short_chars=5, soft_threshold=0.8)
    assert "default" in route(Needs("hola, ¿qué tal?"), BOTH, strict).reason


LONG_ANALYSIS = "Explain step by step why my heating uses more energy at night than during the day. " * 3
LONG_CHAT = "hola, gracias por todo, " * 12


@pytest.mark.parametrize(
    ("text", "config", "roles", "role", "reason"),
    [
        # A long analytical turn goes to the 7B when it can run ...
        (LONG_ANALYSIS, RouterConfig(), BOTH, QUALITY, "long analytical turn"),
        # ... and stays on the 4B, with the reason, when the 7B cannot fit.
        (LONG_ANALYSIS, RouterConfig(), views(quality=False), FAST, f"quality model {BUDGET}: fast model"),
        # short_chars decides what is long: raised above the turn's length, the same turn is fast.
        (LONG_ANALYSIS, RouterConfig(short_chars=len(LONG_ANALYSIS) + 1), BOTH, FAST, "default"),
        # soft_threshold decides what is analytical: at 0.0 nothing is, at 1.0 a chatty turn is.
        (LONG_ANALYSIS, RouterConfig(soft_threshold=0.0), BOTH, FAST, "default"),
        (LONG_CHAT, RouterConfig(), BOTH, FAST, "default"),
        (LONG_CHAT, RouterConfig(soft_threshold=1.0), BOTH, QUALITY, "long analytical turn"),
        # A short turn is never sent to the 7B by length alone.
        ("Explain why", RouterConfig(), BOTH, FAST, "default"),
        ("Explain why", RouterConfig(short_chars=5), BOTH, QUALITY, "long analytical turn (11 chars"),
    ],
)
def test_thresholds_change_the_chosen_model(
    text: str, config: RouterConfig, roles: list[RoleView], role: str, reason: str
) -> None:
    decision = route(Needs(text), roles, config)
    assert decision.role == role
    assert reason in decision.reason


def test_cameras_named_with_no_model_that_sees_go_to_the_deepest_ready_role() -> None:
    """Talk about cameras is no small talk: with no role that sees, the deeper one answers in words."""
    blind = [RoleView(FAST, frozenset({CHAT}), LLAMA, pinned=True, parameters=4e9),
             RoleView(QUALITY, frozenset({CHAT}), LLAMA, parameters=7e9)]  # fmt: skip
    decision = route(Needs("¿qué hay en la cámara del jardín?"), blind)
    assert (decision.role, decision.reason) == (
        QUALITY, "the text mentions camara; no model here can see now: the quality model, in words only"
    )  # fmt: skip
    unloadable = [blind[0], RoleView(QUALITY, frozenset({CHAT}), LLAMA, parameters=7e9, ready=False, why_not=BUDGET)]
    assert route(Needs("what is on the camera?"), unloadable).role == FAST


@pytest.mark.parametrize(
    ("text", "modalities", "roles", "role", "reason"),
    [
        # Audio goes to the role that hears: the 7B (Omni) ...
        ("¿qué ha sido ese ruido?", {"audio"}, BOTH, QUALITY, "audio attached; the quality model hears"),
        ("transcribe this", {"audio"}, BOTH, QUALITY, "audio attached; the quality model hears"),
        # ... or the fast one when its projector hears and the 7B cannot run or does not hear ...
        (
            "what was that sound?",
            {"audio"},
            views(quality=False, fast_hears=True),
            FAST,
            "quality model does not fit the RAM budget; the fast model hears",
        ),
        (
            "¿qué se oye?",
            {"audio"},
            views(quality_hears=False, fast_hears=True),
            FAST,
            "audio attached; the fast model hears",
        ),
        # ... and when nothing hears, the turn goes on as text, saying so.
        (
            "what was that sound?",
            {"audio"},
            views(configured=False),
            FAST,
            "no model here can hear now: the fast model, in words only",
        ),
        # Cameras named in the turn: the snapshot is attached (image), and the words alone route too.
        ("what do you see on the garden camera?", {"image"}, BOTH, QUALITY, "image attached"),
        ("¿hay alguien en la cámara de la entrada?", set(), BOTH, QUALITY, "the text mentions camara"),
        ("is anyone at the front door camera?", set(), BOTH, QUALITY, "the text mentions camera"),
    ],
)
def test_audio_and_camera_routes(
    text: str, modalities: set[str], roles: list[RoleView], role: str, reason: str
) -> None:
    decision = route(Needs(text, frozenset(modalities)), roles)
    assert decision.role == role
    assert reason in decision.reason


# -- any number of roles, chosen by capability --------------------------------------------------
EARS = RoleView("ears", frozenset({CHAT, HEAR}), LLAMA, parameters=3e9)
VOICE = RoleView("voice", frozenset({SPEAK}), frozenset(), parameters=6e8)


def test_a_third_role_that_hears_answers_audio_when_no_other_does() -> None:
    roles = views(quality_hears=False, extra=(EARS, VOICE))
    decision = route(Needs("¿qué se oye?", frozenset({"audio"})), roles)
    assert (decision.role, decision.reason) == ("ears", "audio attached; the ears model hears")
    # ... it is not the deepest: the 7B still takes images and long analysis
    assert route(Needs("hola", frozenset({"image"})), roles).role == QUALITY
    assert route(Needs(LONG_ANALYSIS), roles).role == QUALITY


def test_the_deepest_ready_role_wins_and_a_role_that_only_speaks_never_chats() -> None:
    big_ears = RoleView("big_ears", frozenset({CHAT, HEAR}), LLAMA, parameters=30e9)
    roles = views(extra=(big_ears, VOICE))
    assert route(Needs("what was that?", frozenset({"audio"})), roles).role == "big_ears"
    assert route(Needs("hola"), roles).role == FAST
    alone = [VOICE, *views()]  # configuration order does not make a voice the default
    assert route(Needs("hola"), alone).role == FAST


def test_the_default_role_is_the_first_pinned_one_that_chats() -> None:
    roles = [RoleView("helper", frozenset({CHAT}), LLAMA, parameters=5e8), *views()]
    assert route(Needs("hola"), roles).role == FAST
    unpinned = [RoleView("a", frozenset({CHAT}), LLAMA, parameters=1e9), RoleView("b", frozenset({CHAT}), LLAMA)]
    assert route(Needs("hola"), unpinned).role == "a"


def test_a_constrained_request_goes_to_a_backend_that_enforces_it() -> None:
    torch_quality = RoleView(QUALITY, frozenset({CHAT, SEE, HEAR}), frozenset(), parameters=7e9)
    roles = [views()[0], torch_quality]
    needs = Needs(LONG_ANALYSIS, constraints=frozenset({JSON_SCHEMA}))
    decision = route(needs, roles)
    assert decision.role == FAST
    assert "quality model cannot enforce json_schema: fast model" in decision.reason
    # unconstrained, the same turn goes to the deeper role; an explicit request is kept as asked
    assert route(Needs(LONG_ANALYSIS), roles).role == QUALITY
    assert route(Needs("x", requested=QUALITY, constraints=frozenset({JSON_SCHEMA})), roles).role == QUALITY


def test_a_question_about_what_was_seen_before_stays_on_the_default_role() -> None:
    """The caller knows a memory answers it (the timeline): no eyes needed, no 7B loaded."""
    decision = route(Needs("what happened on the garden camera today?", past=True), BOTH)
    assert (decision.role, decision.reason) == (FAST, "asks what was seen before: the timeline answers; fast model")
    assert route(Needs("what happened on the garden camera today?"), BOTH).role == QUALITY  # no memory: it looks
    attached = route(Needs("what is this?", frozenset({"image"}), past=True), BOTH)
    assert attached.role == QUALITY  # an image attached still goes to the eyes
