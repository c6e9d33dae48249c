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
