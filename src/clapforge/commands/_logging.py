"""Logging for the commands that train (`train`, `demo`)."""

from __future__ import annotations

import logging


def configure_logging() -> None:
    """INFO for clapforge (validation metrics, resume positions), warnings only from the libraries."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("accelerate", "datasets", "transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
