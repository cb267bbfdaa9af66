"""Fixtures of the transcoder's tests."""

from __future__ import annotations

import sys
from pathlib import Path

# The tests' helper modules (samples, pixels) sit beside them.
sys.path.insert(0, str(Path(__file__).parent))
