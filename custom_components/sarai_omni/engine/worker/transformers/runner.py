"""The transformers worker process's model owner (`python -m <package>.engine.worker.transformers`).

It runs under the torch venv's interpreter (Python 3.11, torch 2.13 CPU): torch never enters Home
Assistant's venv. Same protocol and serving loop as the llama.cpp worker (serve.py); only this module
imports torch and transformers. The thinker answers text, images and audio (streamed); the talker and
token2wav speak a given text (`speak`): the text is forced as the thinker's reply, so the voice says
exactly it, in the speaker the request names.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Callable, Sequence
import contextlib
import os
import sys
import time
from typing import Any

from ... import defaults, protocol
from ...errors import Cancelled, InvalidInput, LoadFailed, TorchMissing
from ...prompts import Message, media_parts, render_prompt
from .. import serve
from .decoding import CancelWatch, Force, Stream
from .media import AUDIO_RATE, audio, image

# Qwen2.5-Omni speaks only after this system prompt (its model card says so; otherwise it warns).
SPEAKING_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
SAMPLE_RATE = 24000  # token2wav's output rate
# The talker makes ~50 codec frames per second of speech; a text token lasts well under 0.5 s.
CODES_PER_TOKEN, CODES_BASE = 25, 100
MEDIA_MARK = "\x00media\x00"
DTYPES = defaults.TORCH_DTYPES


def _torch() -> Any:
    try:
        import torch  # noqa: PLC0415  (worker-only)
        import transformers  # noqa: F401, PLC0415
    except ImportError as err:
        raise TorchMissing(f"{sys.executable} cannot import torch and transformers: {err}") from err
    return torch


class HFRunner:
    """One Qwen2.5-Omni model (thinker, and talker + token2wav when it speaks) in this process."""

    def __init__(self, send: serve.Send) -> None:
        self._send = send
        self.requests = serve.Requests()
        self._model: Any = None
        self._tok: Any = None
        self._images: Any = None
        self._features: Any = None
        self._load: dict[str, Any] = {}
        self._finished: deque[dict[str, Any]] = deque(maxlen=8)
        self.load_ms = 0.0

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        handlers: dict[Any, Callable[[dict[str, Any]], dict[str, Any]]] = {
            protocol.OP_LOAD: self.load,
            protocol.OP_GENERATE: self.generate,
            protocol.OP_SPEAK: self.speak,
            protocol.OP_LOGITS: self.logits,
            protocol.OP_BENCH: self.bench,
            protocol.OP_STATS: lambda _: self.stats(),
        }
        if op == protocol.OP_UNLOAD:
            self.unload()
            return {"state": "unloaded"}
        if op not in handlers:
            raise InvalidInput(f"unknown op {op!r}")
        return handlers[op](msg)

    def answer_when_media_ready(self, rid: int) -> None:
        """Images and audio are ready with the model (nothing loads in the background here)."""
        self._send({"id": rid, "event": protocol.EV_RESULT, "data": {"vision_error": None}})

    # -- load -----------------------------------------------------------------------------------
    def load(self, msg: dict[str, Any]) -> dict[str, Any]:
        torch = _torch()
        from transformers import (  # noqa: PLC0415
            AutoTokenizer,
            Qwen2_5OmniForConditionalGeneration,
            Qwen2VLImageProcessorPil,
            WhisperFeatureExtractor,
        )

        self.unload()
        path, dtype = str(msg["model_path"]), str(msg.get("dtype", defaults.TORCH_DTYPE))
        if msg.get("quantization", "none") == "int8":  # dynamic int8 works on float32 modules only
            dtype = "float32"
        if dtype not in DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        torch.set_num_threads(int(msg.get("n_threads") or defaults.N_THREADS))
        started = time.perf_counter()
        try:
            model = Qwen2_5OmniForConditionalGeneration.from_pretrained(
                path, dtype=getattr(torch, dtype), local_files_only=True
            )
            self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self._images = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
            self._features = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as err:
            raise LoadFailed(f"transformers could not load {path}: {err}") from err
        model.eval()
        if msg.get("quantization", "none") == "int8":  # the thinker's linears in int8, the rest float32
            model.thinker = _int8(torch, model.thinker)
        device = _device(torch, str(msg.get("device", "cpu")))
        self._model = model.to(device)
        self._load = {**msg, "dtype": dtype}  # what it runs in (int8 makes it float32)
        self.load_ms = (time.perf_counter() - started) * 1000
        return {
            "load_ms": self.load_ms,
            "n_ctx": int(msg.get("n_ctx", defaults.QUALITY_N_CTX)),
            "chat_template": bool(self._tok.chat_template),
            "vision_pending": False,
            "voices": self.voices(),
            "device": str(device),
        }

    def voices(self) -> list[str]:
        return sorted(getattr(self._model, "speaker_map", {}) or {}) if self._model is not None else []

    def unload(self) -> None:
        self._model = self._tok = self._images = self._features = None

    def stats(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self._model.parameters()) if self._model is not None else 0
        return {
            "loaded": self._model is not None,
            "model_path": self._load.get("model_path"),
            "load_ms": self.load_ms,
            "parameters": params,
            "dtype": self._load.get("dtype"),
            "quantization": self._load.get("quantization", "none"),
            "voices": self.voices(),
            "finished": list(self._finished),
            "pending_cancels": self.requests.pending_cancels(),
        }

    # -- generate -------------------------------------------------------------------------------
    def generate(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Stream the thinker's reply to text, images and audio (unconstrained: never a grammar)."""
        if msg.get("grammar") or msg.get("json_schema") is not None:  # the engine refuses these first
            raise InvalidInput("the transformers backend cannot constrain its output to a grammar or a JSON schema")
        model, started = self._require_model(), time.perf_counter()
        inputs, audio_seconds = self._inputs(msg["messages"], msg.get("tools"))
        n_prompt = int(inputs["input_ids"].shape[1])
        room = int(self._load.get("n_ctx", defaults.QUALITY_N_CTX)) - n_prompt
        if room <= 0:
            raise InvalidInput("the prompt fills the model's context (n_ctx): nothing is left for the answer")
        stream = Stream(self, int(msg["id"]), [*msg.get("stop", [])], started)
        temperature = float(msg.get("temperature", defaults.TEMPERATURE))
        max_tokens = min(int(msg.get("max_tokens", defaults.MAX_TOKENS)), room)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        model.thinker.generate(
            **inputs,
            max_new_tokens=max_tokens,
            min_new_tokens=max_tokens if msg.get("ignore_eos") else 0,
            eos_token_id=self._eos_ids(),
            pad_token_id=self._tok.pad_token_id,
            streamer=stream,
            stopping_criteria=[stream.should_stop],
            **sampling,
        )
        result = stream.finish(max_tokens)
        self._finished.append({"id": msg["id"], "finish_reason": result["finish_reason"]})
        return result | {
            "prompt_tokens": n_prompt,
            "cached_tokens": 0,
            "evaluated_prompt_tokens": n_prompt,
            "audio_seconds": audio_seconds,
            "audio_tokens": int((inputs["input_ids"] == self._tok.convert_tokens_to_ids("<|AUDIO|>")).sum()),
            "dropped_messages": 0,
            "prompt_format": "template",
        }

    def speak(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Say `text` in `voice`: the text forced as the thinker's reply, the talker and token2wav after it."""
        torch, model, started = _torch(), self._require_model(), time.perf_counter()
        text, voice = str(msg.get("text", "")).strip(), str(msg.get("voice") or "")
        if not getattr(model, "has_talker", False) or not self.voices():
            raise InvalidInput("this model has no talker (speech output)")
        if voice not in self.voices():
            raise InvalidInput(f"unknown voice {voice!r}; this model has {', '.join(self.voices())}")
        if not text:
            raise InvalidInput("nothing to say")
        messages: list[Message] = [
            {"role": "system", "content": SPEAKING_SYSTEM_PROMPT},
            {"role": "user", "content": text},
        ]
        inputs, _ = self._inputs(messages, None)
        target = [*self._tok(text, add_special_tokens=False)["input_ids"], self._eos_ids()[0]]
        cancelled = CancelWatch(self, int(msg["id"]))
        from transformers import LogitsProcessorList  # noqa: PLC0415

        with torch.no_grad():
            _, wav = model.generate(
                **inputs,
                speaker=voice,
                thinker_max_new_tokens=len(target),
                thinker_do_sample=False,
                thinker_logits_processor=LogitsProcessorList([Force(target, int(inputs["input_ids"].shape[1]))]),
                thinker_stopping_criteria=[cancelled],
                talker_max_new_tokens=CODES_BASE + CODES_PER_TOKEN * len(target),
                talker_stopping_criteria=[cancelled],
            )
        if cancelled.hit:
            raise Cancelled("cancelled")
        pcm = (wav.detach().float().clamp(-1, 1).cpu().numpy() * 32767).astype("<i2").tobytes()
        seconds = len(pcm) / 2 / SAMPLE_RATE
        took = time.perf_counter() - started
        return {
            "audio": base64.b64encode(pcm).decode(),
            "sample_rate": SAMPLE_RATE,
            "seconds": seconds,
            "voice": voice,
            "ms": took * 1000,
            "real_time_factor": took / seconds if seconds else 0.0,
            "text_tokens": len(target),
        }

    def logits(self, msg: dict[str, Any]) -> dict[str, Any]:
        torch, model = _torch(), self._require_model()
        inputs, _ = self._inputs(msg["messages"], None)
        with torch.no_grad():
            row = model.thinker(**inputs).logits[0, -1].float()
        top = torch.argsort(row, descending=True)[: int(msg.get("top", 20))]
        return {
            "evaluated_prompt_tokens": int(inputs["input_ids"].shape[1]),
            "ids": top.tolist(),
            "logits": [float(row[i]) for i in top],
        }

    def bench(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Prefill and decode speed of the thinker on synthetic tokens."""
        torch, model = _torch(), self._require_model()
        vocab = int(model.thinker.config.text_config.vocab_size)
        prompt = torch.tensor([[(7 + 31 * i) % vocab for i in range(int(msg.get("prompt_tokens", 64)))]])
        n_gen = int(msg.get("gen_tokens", 16))
        with torch.no_grad():
            t0 = time.perf_counter()
            model.thinker(input_ids=prompt)
            t1 = time.perf_counter()
            model.thinker.generate(input_ids=prompt, max_new_tokens=n_gen, min_new_tokens=n_gen, do_sample=False)
            t2 = time.perf_counter()
        return {"prefill_tps": prompt.shape[1] / (t1 - t0), "decode_tps": n_gen / max(t2 - t1 - (t1 - t0), 1e-6)}

    # -- inputs ---------------------------------------------------------------------------------
    def _require_model(self) -> Any:
        if self._model is None:
            raise InvalidInput("no model loaded")
        return self._model

    def _eos_ids(self) -> list[int]:
        ids = [self._tok.convert_tokens_to_ids("<|im_end|>"), self._tok.eos_token_id]
        return list(dict.fromkeys(i for i in ids if isinstance(i, int) and i >= 0))

    def _inputs(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> tuple[dict[str, Any], float]:
        """The thinker's inputs: the chat template's text with each image and clip expanded to its tokens."""
        self._require_model()
        plain, paths = media_parts(messages, MEDIA_MARK)
        kinds = [p["type"] for m in messages if isinstance(m.get("content"), list) for p in m["content"]]
        kinds = [k for k in kinds if k in ("image", "audio")]
        rendered = render_prompt(plain, self._tok.chat_template, eos_token="<|im_end|>", tools=tools)
        pieces = rendered.text.split(MEDIA_MARK)
        extra: dict[str, Any] = {}
        images = [image(p) for p, k in zip(paths, kinds, strict=True) if k == "image"]
        clips = [audio(p) for p, k in zip(paths, kinds, strict=True) if k == "audio"]
        image_tokens, audio_tokens = self._images_in(images, extra), self._audio_in(clips, extra)
        text = pieces[0]
        for kind, piece in zip(kinds, pieces[1:], strict=True):
            if kind == "image":
                text += f"<|vision_bos|>{'<|IMAGE|>' * image_tokens.pop(0)}<|vision_eos|>"
            else:
                text += f"<|audio_bos|>{'<|AUDIO|>' * audio_tokens.pop(0)}<|audio_eos|>"
            text += piece
        encoded = self._tok(text, return_tensors="pt", add_special_tokens=False)
        device = self._model.device
        inputs = {k: v.to(device) for k, v in {**encoded, **extra}.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.thinker.dtype)
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self._model.thinker.dtype)
        return inputs, sum(len(c) for c in clips) / AUDIO_RATE

    def _images_in(self, images: Sequence[Any], extra: dict[str, Any]) -> list[int]:
        if not images:
            return []
        out = self._images(images=list(images), return_tensors="pt")
        extra["pixel_values"], extra["image_grid_thw"] = out["pixel_values"], out["image_grid_thw"]
        merge = int(self._images.merge_size) ** 2
        return [int(thw.prod()) // merge for thw in out["image_grid_thw"]]

    def _audio_in(self, clips: Sequence[Any], extra: dict[str, Any]) -> list[int]:
        if not clips:
            return []
        out = self._features(
            list(clips), sampling_rate=AUDIO_RATE, return_attention_mask=True, padding="max_length", return_tensors="pt"
        )
        extra["input_features"], extra["feature_attention_mask"] = out["input_features"], out["attention_mask"]
        lengths = out["attention_mask"].sum(-1)
        return [int(((n - 1) // 2 + 1 - 2) // 2 + 1) for n in lengths.tolist()]  # the encoder's two strides


def _device(torch: Any, wanted: str) -> Any:
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise LoadFailed("device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(wanted)


def _int8(torch: Any, module: Any) -> Any:
    """Weight-only int8 of every Linear (dynamic quantization: int8 weights, float activations)."""
    try:
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    except (AttributeError, RuntimeError) as err:
        raise LoadFailed(f"int8 weights are not supported by this torch on this machine: {err}") from err


def _preimport() -> None:
    try:
        _torch()
        import transformers.models.qwen2_5_omni.modeling_qwen2_5_omni  # noqa: F401, PLC0415
    except (TorchMissing, ImportError):
        pass


def _measured() -> None:
    """Under the test suite's coverage (its subprocess settings in the environment), measure this
    interpreter too: coverage's own subprocess hook lives in HA's venv, not in the torch venv."""
    if os.environ.get("COVERAGE_PROCESS_CONFIG") or os.environ.get("COVERAGE_PROCESS_START"):
        with contextlib.suppress(ImportError):
            import coverage  # noqa: PLC0415

            coverage.process_startup()


def main() -> None:
    _measured()
    serve.main(HFRunner, _preimport)
