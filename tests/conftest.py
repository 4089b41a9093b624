"""Test-wide settings; they must be in place before torch is imported anywhere."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Spinning OpenMP threads make tiny models ~30x slower on 2 shared cores; nothing loads from a hub.
os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
