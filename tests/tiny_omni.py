"""Write a tiny random-weight Qwen2.5-Omni (thinker + talker + token2wav) in Hugging Face layout.

Runs under the torch venv's Python (`python tests/tiny_omni.py OUT SPEC.json`), never in HA's venv.
The model is made with `from_config` (no hub): the seed's architecture with every dimension cut down,
the special tokens renumbered into a small byte-level BPE vocabulary, and the two voices the seed
ships (`Chelsie`, `Ethan`) as random speaker conditionings. SPEC.json carries the tokenizer
(tokens, merges, special tokens) and the chat template, so they are the GGUF fixtures' own.
"""

from __future__ import annotations

import json
from pathlib import Path
import sys
from typing import Any

VOICES = ("Chelsie", "Ethan")
# Qwen2.5-Omni's multimodal markers, appended to the tiny vocabulary in this order.
MEDIA_TOKENS = (
    "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|tts_pad|>", "<|tts_bos|>", "<|tts_eos|>",
)  # fmt: skip
CODEC_VOCAB = 8448  # the talker's codec vocabulary, with the seed's codec start/end/pad/mask ids
MEL_BINS = 80


def tokenizer(spec: dict[str, Any], out: Path) -> dict[str, int]:
    """Save a fast tokenizer (byte-level BPE) with the media tokens; returns their ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = list(spec["tokens"])
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in spec["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = list(spec["special"]) + list(MEDIA_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=special
    )
    fast.chat_template = spec["chat_template"]
    fast.save_pretrained(out)
    return {t: int(fast.convert_tokens_to_ids(t)) for t in special}


def config(ids: dict[str, int], vocab: int) -> Any:
    from transformers import Qwen2_5OmniConfig

    text = {"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
            "tie_word_embeddings": False}  # fmt: skip
    media = {"audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
             "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
             "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
             "vision_end_token_id": ids["<|vision_eos|>"]}  # fmt: skip
    thinker = {
        "text_config": text,
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "out_hidden_size": 64, "fullatt_block_indexes": [1], "window_size": 112},
        "audio_config": {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                         "d_model": 32, "output_dim": 64, "num_mel_bins": 128},
        **media,
        "user_token_id": ids["<|im_start|>"],
    }  # fmt: skip
    talker = {"vocab_size": CODEC_VOCAB, "embedding_size": 64, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
              "max_position_embeddings": 8192, "tie_word_embeddings": False,
              "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
              "tts_text_start_token_id": ids["<|tts_bos|>"], "tts_text_end_token_id": ids["<|tts_eos|>"],
              "tts_text_pad_token_id": ids["<|tts_pad|>"], **media}  # fmt: skip
    token2wav = {
        "dit_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ff_mult": 2,
                       "emb_dim": 16, "head_dim": 16, "num_embeds": CODEC_VOCAB, "mel_dim": MEL_BINS,
                       "enc_emb_dim": 16, "enc_dim": 16, "enc_channels": [16, 16, 16, 16, 48],
                       "enc_attention_channels": 8, "enc_se_channels": 8, "look_ahead_layers": [1],
                       "look_backward_layers": [0]},
        "bigvgan_config": {"mel_dim": MEL_BINS, "upsample_initial_channel": 64},
    }  # fmt: skip
    return Qwen2_5OmniConfig(
        thinker_config=thinker, talker_config=talker, token2wav_config=token2wav, enable_audio_output=True
    )


def preprocessors(out: Path) -> None:
    """The seed's preprocessors in one preprocessor_config.json, as its repository ships them:
    Qwen2-VL image patches and Whisper features (128 mel bins)."""
    from transformers import Qwen2VLImageProcessorPil, WhisperFeatureExtractor

    merged = {**Qwen2VLImageProcessorPil().to_dict(), **WhisperFeatureExtractor(feature_size=128).to_dict()}
    merged.pop("image_processor_type", None)  # each class reads its own keys
    (out / "preprocessor_config.json").write_text(json.dumps(merged, indent=1, default=str))


def write(out: Path, spec: dict[str, Any], seed: int = 0) -> Path:
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    out.mkdir(parents=True, exist_ok=True)
    ids = tokenizer(spec, out)
    vocab = max(ids.values()) + 1
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration._from_config(config(ids, vocab), torch_dtype=torch.float32)
    model.save_pretrained(out)
    preprocessors(out)
    speakers = {
        name: {"bos_token": ids["<|tts_bos|>"], "cond": torch.randn(1, 16), "ref_mel": torch.randn(1, 50, MEL_BINS)}
        for name in VOICES
    }
    torch.save(speakers, out / "spk_dict.pt")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1])
    write(target, json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(target)
