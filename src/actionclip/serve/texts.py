"""Class text features for ``actionclip serve``, computed once per (labels, templates) and kept in an LRU bounded by
count and by bytes. A request's own labels and templates are bounded too (``MAX_TEXTS``): 100 labels x 10,000
templates once held the model for 40 s and left the server 1.3 GB larger. Encodings run one at a time, outside the
model thread's batches, so a request whose labels are already encoded never waits for another's; they run in chunks,
between which a client that has gone away stops its encoding."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from actionclip.prompts import resolve_templates

MAX_TEXTS = 16_000  # labels x templates of a request: 1,000 labels (the most a request may give) x the official 16
TEXT_FEATURE_SETS = 16  # label sets kept
TEXT_FEATURE_BYTES = 256 << 20  # and their features' bytes: 8 of the largest sets (16,000 x 512 fp32)
CHUNK_TEXTS = 1024  # texts per chunk, as encode_text batches them


class EncodingCancelled(Exception):
    """The client went away while its labels were being encoded."""


def check_text_count(labels: int, templates: Sequence[str] | str | None, model: nn.Module) -> None:
    """ValueError if ``labels`` x ``templates`` (None: the model's) is more than ``MAX_TEXTS`` texts."""
    # A list is counted before its templates are checked: checking 10,000 of them took 11 ms, five times the rest of
    # the refusal, and a client sending such requests back to back took a core from the others.
    count = len(templates) if isinstance(templates, list) else len(resolve_templates(templates or model.default_templates))
    if labels * count > MAX_TEXTS:
        raise ValueError(
            f"{labels} labels x {count} templates is {labels * count} texts to encode: at most {MAX_TEXTS} per request (labels x templates)"
        )


class TextFeatureCache:
    """Class text features per (labels, templates): the ``size`` most recently used sets, at most ``max_bytes`` of
    them (the most recent set is kept whatever its size)."""

    def __init__(self, model: nn.Module, size: int = TEXT_FEATURE_SETS, max_bytes: int = TEXT_FEATURE_BYTES):
        self.model, self.size, self.max_bytes = model, size, max_bytes
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the LRU's bookkeeping, never held while encoding
        self._encoding = threading.Lock()  # one encoding at a time: its memory and the cores go to one request
        self.encoded = 0  # label sets run through the text encoder (the tests count them)
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._features)

    def get(self, labels: Sequence[str], templates: Sequence[str] | str | None, cancelled: threading.Event | None = None) -> torch.Tensor:
        """The features ``[K, C, D]`` of ``labels`` with ``templates`` (None: the model's); ``EncodingCancelled``
        if ``cancelled`` is set while they are encoded."""
        resolved = resolve_templates(templates if templates is not None else self.model.default_templates)
        key = (tuple(labels), tuple(resolved))
        if (features := self._cached(key)) is not None:
            return features
        with self._encoding:
            if (features := self._cached(key)) is not None:  # encoded meanwhile, for a request that came first
                return features
            features = self._encode(list(labels), resolved, cancelled)
            self.encoded += 1
            self._keep(key, features)
            return features

    def _cached(self, key: tuple) -> torch.Tensor | None:
        with self._lock:
            if key in self._features:
                self._features.move_to_end(key)
                return self._features[key]
            return None

    def _encode(self, labels: list[str], templates: list[str], cancelled: threading.Event | None) -> torch.Tensor:
        # Whole templates per chunk: class_text_features treats each text alone, so the chunks give the same features.
        step = max(1, CHUNK_TEXTS // len(labels))
        chunks = []
        for start in range(0, len(templates), step):
            if cancelled is not None and cancelled.is_set():
                raise EncodingCancelled()
            with torch.inference_mode():
                chunks.append(self.model.class_text_features(labels, templates[start : start + step]))
        return torch.cat(chunks)

    def _keep(self, key: tuple, features: torch.Tensor) -> None:
        with self._lock:
            self._features[key] = features
            self.bytes += features.nbytes
            while len(self._features) > 1 and (len(self._features) > self.size or self.bytes > self.max_bytes):
                self.bytes -= self._features.popitem(last=False)[1].nbytes
