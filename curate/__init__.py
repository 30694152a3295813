"""curate: learn which training data an LLM should see."""

__version__ = "0.1.0"
