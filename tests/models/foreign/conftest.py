"""Puts this folder on the path for ``foreign_tiny`` (the tiny foreign models)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
