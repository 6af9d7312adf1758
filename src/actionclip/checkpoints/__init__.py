"""Weights on disk: safe readers of weight files, our checkpoint format, one importer per foreign format, the
published checkpoints (registry, downloads) and the one dispatcher from any source to a model (``sources.py``)."""
