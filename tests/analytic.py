"""Moved to tts_diffusion.testing.analytic; this alias keeps tests written against the old path working (to be removed)."""
import sys

from tts_diffusion.testing import analytic as _moved

sys.modules[__name__] = _moved
