"""What runs inside the worker processes (one model each), never in Home Assistant's process.

Python 3.11-safe and importable without Home Assistant, the engine's host side or any native library
(ruff holds this tree and the shared modules it imports to Python 3.11: the transformers worker runs
under the torch venv's interpreter; tests/test_structure.py imports it there). A worker process runs
`python -m <package>.engine.worker.<backend>`; `engine/__init__` is lazy, so nothing of the host side
comes with it.
"""
