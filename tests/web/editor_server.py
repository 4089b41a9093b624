"""Run the real diffloom server for the editor tests, with a tiny checkpoint in place.

    python tests/web/editor_server.py --base-directory DIR --tiny-checkpoint sd1 [server.py flags]

This is `server.py` itself (its main, its app factory, its nodes). The one addition: a tiny
random-weight checkpoint is written into DIR/models/checkpoints first, in this process, which
imports torch for the server anyway (a second process would import it again).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import server  # noqa: E402  (the repository's server.py)


def main(argv: list[str]) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--tiny-checkpoint", required=True, help="family of the tiny checkpoint to write")
    extra.add_argument("--base-directory", type=Path, required=True)
    ours, rest = extra.parse_known_args(argv)
    from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415

    write_tiny_checkpoint(ours.base_directory / "models" / "checkpoints", ours.tiny_checkpoint)
    return server.main([*rest, "--base-directory", str(ours.base_directory)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
