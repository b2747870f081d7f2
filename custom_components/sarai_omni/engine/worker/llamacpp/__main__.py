"""`python -m <package>.engine.worker.llamacpp`: serve one llama.cpp model over stdin/stdout."""

from .runner import main

main()
