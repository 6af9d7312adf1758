"""CLIP's byte-pair-encoding tokenizer without torch, for exported models: the same token ids as open_clip's
``SimpleTokenizer`` (``tests/test_onnx_runtime.py`` compares them), as numpy arrays. Needs ``regex`` (Unicode classes)
and, when installed, ``ftfy`` (open_clip cleans text with it too); the vocabulary is the merges file an export
directory carries (open_clip's ``bpe_simple_vocab_16e6.txt.gz``).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex

try:
    import ftfy
except ImportError:  # open_clip installs it; without it, text that needs fixing may tokenize differently
    ftfy = None

START, END = "<start_of_text>", "<end_of_text>"
# CLIP's vocabulary: 256 byte symbols, the same with an end-of-word mark, 48894 merges, the two special tokens.
MERGES = 49152 - 256 - 2


@lru_cache(maxsize=None)
def byte_symbols() -> dict[int, str]:
    """Each byte as a printable character: the printable Latin-1 bytes as themselves, the others shifted past 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in symbols)
    symbols.update((b, chr(256 + n)) for n, b in enumerate(shifted))
    return symbols


def clean(text: str) -> str:
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class BPETokenizer:
    """``tokenizer(texts)`` -> int64 ``[N, context_length]``: start token, the text's tokens, end token, zeros
    (texts too long are cut and end with the end token, as open_clip does)."""

    def __init__(self, merges_path: str | Path, context_length: int = 77):
        lines = gzip.open(merges_path).read().decode("utf-8").split("\n")[1 : MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        symbols = list(byte_symbols().values())
        vocabulary = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
        self.ids = {token: i for i, token in enumerate(vocabulary)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.start, self.end = self.ids[START], self.ids[END]
        self.context_length = context_length
        self.pattern = regex.compile(rf"{START}|{END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE)
        self._words: dict[str, list[str]] = {START: [START], END: [END]}

    def _merge(self, word: str) -> list[str]:
        """The word's symbols after applying the merges, lowest rank first, until none applies."""
        if word in self._words:
            return self._words[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._words[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        symbols = byte_symbols()
        ids = []
        for piece in self.pattern.findall(clean(text)):
            word = "".join(symbols[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[part] for part in self._merge(word))
        return ids

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end][: self.context_length]
            ids[-1] = self.end
            result[row, : len(ids)] = ids
        return result
