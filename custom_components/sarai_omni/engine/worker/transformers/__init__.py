"""The transformers worker (Qwen2.5-Omni under the torch venv's Python): the only code that imports torch."""
