"""How large DAS's proposal correction log p/q is on the shapes model guided by the domain CLIP:
per step, std(log p/q) = std_i lambda_{i+1} L |grad_x r(x0_hat(x))| for 4 particles of one
prompt (the gradient-shifted mean's weight term, searchers/das.py), at L = 10 and 100. When it
is several nats, the weights follow the proposal's noise rather than the reward.

    python scripts/das_proposal_weights.py
"""
import torch

torch.set_num_threads(1)
from tts_diffusion.bench.default_model import load_default_model
from tts_diffusion.searchers.das import reward_grad_through_denoiser, exp_schedule, default_gamma
from tts_diffusion.core.reward_grad import differentiable_reward
tts = load_default_model("cpu"); clip = tts.get_verifier("clip")
proc = tts.process().for_call(); n = proc.num_steps
prompt = "a photo of a red circle and an orange star"
cond = proc.encode(prompt)
fn = reward_grad_through_denoiser(proc, cond, lambda x0: differentiable_reward(proc, clip, x0, prompt).double())
g = torch.Generator().manual_seed(0)
x = proc.sample_noise(4, g)
lam = exp_schedule(n, default_gamma(n))
for i in range(n):
    pred = proc.denoise(x, i, cond)
    std = proc.family.step_std(i, 1.0)
    if i % 3 == 0 and std > 0:
        r, gr = fn(x, i)
        gn = gr.reshape(4, -1).norm(dim=1)
        print(i, f"std {std:.3f} lam_next {lam[i+1]:.3f} r {r.numpy().round(3)} |grad| {gn.numpy().round(3)} "
              f"sd(log p/q) at L=10: {(std*lam[i+1]*10*gn).numpy().round(2)}  at L=100: {(std*lam[i+1]*100*gn).numpy().round(2)}", flush=True)
    x = proc._step(x, i, pred, 1.0, None, g)
