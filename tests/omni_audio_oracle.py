"""Qwen2.5-Omni's audio embeddings as transformers computes them: the oracle of the hearing tests.

Runs under the torch venv's Python, never in HA's venv:
    python tests/omni_audio_oracle.py HF_FOLDER OUT.npz CLIP.wav [CLIP.wav ...]

Features as Qwen2_5OmniProcessor makes them (WhisperFeatureExtractor: the clip padded with silence to
30 s, `truncation=False` so a longer clip is kept whole), the frames of the clip itself selected by
its attention mask (one per hop of samples), then the thinker's `get_audio_features`: one row per
audio token. OUT.npz holds one array per clip, keyed by the clip's file name.
"""

from __future__ import annotations

from pathlib import Path
import sys
import wave

import numpy as np


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float32) / 32768.0


def embeddings(folder: Path, clips: list[Path]) -> dict[str, np.ndarray]:
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(folder)
    thinker = Qwen2_5OmniForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).thinker.eval()
    out = {}
    for clip in clips:
        audio = samples(clip)
        padded = np.concatenate([audio, np.zeros(extractor.n_samples, np.float32)])
        features = extractor(padded, sampling_rate=16000, truncation=False, return_tensors="pt").input_features
        valid = -(-audio.size // extractor.hop_length)  # what the processor's attention mask keeps
        mask = torch.zeros(1, features.shape[-1], dtype=torch.long)
        mask[0, :valid] = 1
        with torch.no_grad():
            hidden = thinker.get_audio_features(features, feature_attention_mask=mask).last_hidden_state
        out[clip.name] = hidden.float().numpy()
    return out


if __name__ == "__main__":
    found = embeddings(Path(sys.argv[1]), [Path(p) for p in sys.argv[3:]])
    np.savez(sys.argv[2], **found)  # type: ignore[arg-type]  # numpy's stub types **kwds as its flags
