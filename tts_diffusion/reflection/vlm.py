"""Critic through a local vision-language model (`critic=vlm`, `critic_model=PATH`): any
`AutoModelForImageTextToText` (or, on older transformers, `AutoModelForVision2Seq`) with its
processor, saved with `save_pretrained`; no network.

For each image the model answers one yes/no question per claim of the prompt (claims.py:
"Is it true that the car is red? Answer yes or no.") and one open question ("What in this
image differs from: <prompt>?"). A claim passes when the answer starts with "yes"; its
score is 1 / 0. The critique text lists the failed claims, then the model's open answer.
Images go through the processor as PIL images; questions are batched over the images."""
from __future__ import annotations

from typing import Sequence

import torch

from ..records.result import to_pil
from ..errors import TTSInputError
from ..verifiers.base import Verdict
from .claims import parse_claims
from .critique import ClaimResult, Critique
from .local_models import model_folder

YES_NO = "Question: is it true that {claim}? Answer yes or no. Answer:"
OPEN = "Question: what in this image differs from '{prompt}'? Answer:"


class VLMCritic:
    name = "vlm"

    def __init__(self, path: str | None, device: torch.device | str | None = None, max_new_tokens: int = 24):
        folder = model_folder(path, "critic_model", "critic 'vlm'")
        import transformers
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        auto = getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
        self.model = auto.from_pretrained(folder, local_files_only=True).eval()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)
        self.max_new_tokens = int(max_new_tokens)

    def check_prompt(self, prompt: str) -> None:
        if not parse_claims(prompt).claims:
            raise TTSInputError(f"critic 'vlm' found no claim to ask about in {prompt!r}")

    @torch.no_grad()
    def ask(self, images: Sequence, question: str, max_new_tokens: int | None = None) -> list[str]:
        """The model's answer to `question` about each PIL image (greedy)."""
        enc = self.processor(images=list(images), text=[question] * len(images), return_tensors="pt", padding=True)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        out = self.model.generate(**enc, max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False)
        ids = enc["input_ids"]
        n_in = ids.shape[1]
        # decoder-only models (and BLIP's text decoder) echo the question (BLIP swaps its first token)
        echo = out.shape[1] >= n_in and torch.equal(out[:, 1:n_in].cpu(), ids[:, 1:n_in].cpu())
        texts = self.processor.batch_decode(out[:, n_in:] if echo else out, skip_special_tokens=True)
        return [t.strip() for t in texts]

    def __call__(self, images: torch.Tensor, prompt: str, verdict: Verdict | None = None) -> list[Critique]:
        pil = [to_pil(im) for im in images]
        claims = parse_claims(prompt).claims
        answers = [self.ask(pil, YES_NO.format(claim=c.text), 3) for c in claims]
        opened = self.ask(pil, OPEN.format(prompt=prompt))
        out = []
        for b in range(len(pil)):
            results = [ClaimResult(c, a[b].lower().startswith("yes"), float(a[b].lower().startswith("yes")))
                       for c, a in zip(claims, answers)]
            failed = "; ".join(f"{r.claim.text} fails" for r in results if not r.passed)
            text = "; ".join(t for t in (failed, opened[b]) if t) or "no problem found"
            out.append(Critique(text, results))
        return out
