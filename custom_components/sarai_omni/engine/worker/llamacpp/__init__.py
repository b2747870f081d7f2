"""The llama.cpp worker: the only code that imports llama_cpp (runner, media, decoding, grammar, KV
files), and `adapter`, the one module that touches llama-cpp-python's private names."""
