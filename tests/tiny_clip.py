"""Moved to tts_diffusion.testing.tiny_clip; this alias keeps tests written against the old path working (to be removed)."""
import sys

from tts_diffusion.testing import tiny_clip as _moved

sys.modules[__name__] = _moved
