"""Moved to tts_diffusion.testing.helpers; this alias keeps tests written against the old path working (to be removed)."""
import sys

from tts_diffusion.testing import helpers as _moved

sys.modules[__name__] = _moved
