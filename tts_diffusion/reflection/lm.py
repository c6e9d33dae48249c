"""Prompt refiner through a local causal language model (`refiner=lm`, `refiner_model=PATH`):
any `AutoModelForCausalLM` + tokenizer saved with `save_pretrained`, no network.

The model continues an instruction in the spirit of ReflectionFlow's refine_prompt.txt
(rewrite the prompt so the generator fixes what the critique says is wrong) with greedy
decoding; the first line of its continuation is the refined prompt. An empty continuation
leaves the prompt as it was."""
from __future__ import annotations

import torch

from .critique import Critique
from .local_models import model_folder

TEMPLATE = ("Rewrite the image prompt so that an image generator gets the failed parts right. Keep its meaning.\n"
            "Prompt: {prompt}\nProblems: {problems}\nRewritten prompt:")


class LMRefiner:
    name = "lm"

    def __init__(self, path: str | None, device: torch.device | str | None = None, max_new_tokens: int = 48):
        folder = model_folder(path, "refiner_model", "refiner 'lm'")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)
        self.max_new_tokens = int(max_new_tokens)

    @torch.no_grad()
    def __call__(self, prompt: str, critique: Critique) -> str:
        if not critique.failed and critique.claims:
            return prompt
        text = TEMPLATE.format(prompt=prompt, problems=critique.text or "none")
        enc = self.tokenizer(text, return_tensors="pt").to(self.device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        new = self.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        line = next((ln.strip() for ln in new.splitlines() if ln.strip()), "")
        return line or prompt
