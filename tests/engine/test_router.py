"""The routing policy (pure function)."""

from __future__ import annotations

import pytest

from custom_components.sarai_omni.engine.router import (
    FAST,
    QUALITY,
    Availability,
    RouterConfig,
    route,
    soft_score,
)

BOTH = Availability(quality=True, quality_audio=True)


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
    decision = route(text, availability=BOTH)
    assert decision.role == role
    assert reason in decision.reason


def test_soft_score_is_bilingual_and_accent_blind() -> None:
    assert soft_score("¿Qué tal?") == soft_score("que tal") == 1.0
    assert soft_score("Explícame por qué el cielo es azul") < 0.8


def test_modalities_go_to_quality() -> None:
    decision = route("hola", {"image"}, availability=BOTH)
    assert decision.role == QUALITY
    assert decision.reasons[0] == "image attached"


def test_explicit_request_wins() -> None:
    assert route("¿qué ves en la cámara?", requested=FAST, availability=BOTH).role == FAST
    assert route("hola", requested=QUALITY).reason == "explicit request for the quality model"


def test_vision_falls_back_to_fast_projector() -> None:
    avail = Availability(quality=False, quality_why_not="does not fit the RAM budget", fast_vision=True)
    decision = route("what is on the camera?", {"image"}, availability=avail)
    assert decision.role == FAST
    assert "quality model does not fit the RAM budget" in decision.reason
    assert "the fast model has a vision projector" in decision.reason


def test_thresholds_are_configurable() -> None:
    strict = RouterConfig(short_chars=5, soft_threshold=0.8)
    assert "default" in route("hola, ¿qué tal?", config=strict).reason


LONG_ANALYSIS = "Explain step by step why my heating uses more energy at night than during the day. " * 3
LONG_CHAT = "hola, gracias por todo, " * 12


@pytest.mark.parametrize(
    ("text", "config", "avail", "role", "reason"),
    [
        # A long analytical turn goes to the 7B when it can run ...
        (LONG_ANALYSIS, RouterConfig(), BOTH, QUALITY, "long analytical turn"),
        # ... and stays on the 4B, with the reason, when the 7B cannot fit.
        (
            LONG_ANALYSIS,
            RouterConfig(),
            Availability(quality_why_not="does not fit the RAM budget"),
            FAST,
            "quality model does not fit the RAM budget: fast model",
        ),
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
    text: str, config: RouterConfig, avail: Availability, role: str, reason: str
) -> None:
    decision = route(text, availability=avail, config=config)
    assert decision.role == role
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("text", "modalities", "avail", "role", "reason"),
    [
        # Audio goes to the model that hears: the 7B (Omni) ...
        ("¿qué ha sido ese ruido?", {"audio"}, BOTH, QUALITY, "audio attached; quality model"),
        ("transcribe this", {"audio"}, BOTH, QUALITY, "audio attached; quality model"),
        # ... or the fast model when its projector hears and the 7B cannot run or does not hear ...
        (
            "what was that sound?",
            {"audio"},
            Availability(quality_why_not="does not fit the RAM budget", fast_audio=True),
            FAST,
            "quality model does not fit the RAM budget; the fast model's projector hears",
        ),
        (
            "¿qué se oye?",
            {"audio"},
            Availability(quality=True, quality_audio=False, fast_audio=True),
            FAST,
            "quality model does not hear; the fast model's projector hears",
        ),
        # ... and when nothing hears, the turn goes on as text, saying so.
        ("what was that sound?", {"audio"}, Availability(), FAST, "no model here hears audio: text only"),
        # Cameras named in the turn: the snapshot is attached (image), and the words alone route too.
        ("what do you see on the garden camera?", {"image"}, BOTH, QUALITY, "image attached"),
        ("¿hay alguien en la cámara de la entrada?", set(), BOTH, QUALITY, "the text mentions camara"),
        ("is anyone at the front door camera?", set(), BOTH, QUALITY, "the text mentions camera"),
    ],
)
def test_audio_and_camera_routes(text: str, modalities: set[str], avail: Availability, role: str, reason: str) -> None:
    decision = route(text, modalities, availability=avail)
    assert decision.role == role
    assert reason in decision.reason
