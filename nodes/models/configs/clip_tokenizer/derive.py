"""Rebuild vocab.json and merges.txt from CLIP's bpe_simple_vocab_16e6.txt.gz (see README.md)."""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

VOCAB_SIZE = 49408
MERGES = VOCAB_SIZE - 2 * 256 - 2


def byte_symbols() -> list[str]:
    """CLIP's printable stand-in for each byte value, in token-id order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def derive(source: Path, out: Path) -> None:
    lines = gzip.open(source).read().decode("utf-8").split("\n")
    merges = lines[1:1 + MERGES]  # line 0 is a version comment
    symbols = byte_symbols()
    vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m.split()) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    if len(vocab) != VOCAB_SIZE or len(set(vocab)) != VOCAB_SIZE:
        raise SystemExit(f"{source}: expected {VOCAB_SIZE} distinct tokens, got {len(set(vocab))}")
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
                                    encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
