"""`python -m <package>.engine.worker.transformers`: serve one transformers model over stdin/stdout."""

from .runner import main

main()
