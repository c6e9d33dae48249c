#!/usr/bin/env python
"""Make the T-GATE faithfulness fixture with the *reference* package (`tgate==1.0.0`).

The reference monkeypatches `Attention.forward` and copies each pipeline's `__call__`, and it
pins `DeepCache==0.1.1`; so it runs in an isolated virtual environment that reuses this
interpreter's torch / diffusers / transformers (`--system-site-packages`):

    python -m venv --system-site-packages /tmp/tgate-venv
    /tmp/tgate-venv/bin/pip install tgate==1.0.0 DeepCache==0.1.1 --no-deps
    /tmp/tgate-venv/bin/python scripts/tgate_reference.py --out tests/fixtures/tgate/reference.pt

It builds the tiny SD-1.5-shaped pipeline of tts_diffusion/testing/tiny_pipelines.py (DDIM scheduler, the
scheduler the reference's loop steps with), draws initial latents for two images, and runs
`TgateSDLoader(pipe).tgate(...)` with `output_type="latent"` for each setting below. The
fixture (latents in, latents out, settings) is what tests/test_tgate.py compares
`DenoisingProcess` with T-GATE against.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle"
SIZE = 64
GUIDANCE = 7.5
#: (steps, gate_step, sp_interval, fi_interval, warm_up): one exercising every phase (SA cache /
#: reuse before the gate, the averaged gate step, SA reuse after it), and the reference's defaults
SETTINGS = [(8, 6, 3, 2, 1), (25, 10, 5, 1, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/tgate/reference.pt"))
    args = ap.parse_args()
    import tgate
    from tgate import TgateSDLoader
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    pipe = make_tiny_pipeline("sd15")
    latents = torch.randn((2, 4, SIZE // 8, SIZE // 8), generator=torch.Generator().manual_seed(7))
    runs = []
    for steps, gate, sp, fi, warm in SETTINGS:
        pipe = TgateSDLoader(make_tiny_pipeline("sd15"))  # fresh modules: the reference keeps caches on them
        out = pipe.tgate(prompt=[PROMPT] * 2, gate_step=gate, sp_interval=sp, fi_interval=fi, warm_up=warm,
                         num_inference_steps=steps, guidance_scale=GUIDANCE, height=SIZE, width=SIZE,
                         latents=latents.clone(), output_type="latent").images
        runs.append({"num_steps": steps, "gate_step": gate, "sp_interval": sp, "fi_interval": fi,
                     "warm_up": warm, "latents_out": out.detach().clone()})
        print(f"steps {steps} gate {gate}: |out| max {out.abs().max():.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"prompt": PROMPT, "size": SIZE, "guidance_scale": GUIDANCE, "latents": latents, "runs": runs,
                "reference": f"tgate {getattr(tgate, '__version__', '1.0.0')}, TgateSDLoader"}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
