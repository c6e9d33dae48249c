"""Small test-only verifiers whose score is a known function of the image."""

from tts_diffusion.verifiers.base import Verifier


class BrightnessVerifier(Verifier):
    """Mean pixel value: a verifier whose answer is known exactly."""

    name = "brightness"

    def __init__(self, chunk_size: int = 64):
        super().__init__()
        self.chunk_size = chunk_size
        self.calls = 0

    def score(self, images, prompts):
        self.calls += images.shape[0]
        return images.float().mean(dim=(1, 2, 3))


class SelectRecorder:
    """A per-particle state entry (core/state.py) that records every selection it follows."""

    def __init__(self):
        self.selected: list[list[int]] = []
        self.resets: list[int] = []

    def select(self, idx):
        self.selected.append(idx.tolist())

    def reset(self, num_particles):
        self.resets.append(int(num_particles))
