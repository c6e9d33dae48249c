"""Reward guidance (TFG: Ye et al. 2024, "TFG: Unified Training-Free Guidance", arXiv
2409.15761; code YWolfeee/Training-Free-Guidance `methods/tfg.py`) settings, without torch
(the guided step is in guidance.py).

`RewardGuidance` is what `reward_guidance=` / `--reward-guidance VERIFIER` and
`--reward-guidance-option KEY=VALUE` take; `GUIDANCE_PARAMS` declares its options once.
TFG's four knobs, with the code's defaults (`utils/configs.py`):

- variance guidance `rho` (TFG's rho-bar): x_t moves along rho_t grad_{x_t} log f(x0_hat(x_t)),
  the gradient taken through the denoiser (a denoiser backward per row);
- mean guidance `mu` (mu-bar) with `iterations` (N_iter): x0 <- x0 + mu_t grad_{x0} log f(x0),
  a predictor-only gradient, repeated N_iter times;
- implicit dynamics `gamma` (gamma-bar, the code's `sigma`) with `samples` (K, `eps_bsz`):
  log f is smoothed as logsumexp_k log f(x + gamma_t eps_k) - log K;
- recurrence `n_recur` (`recur_steps`, "time travel"): after a guided step, renoise back to
  the step's time and redo it, n_recur times in all.

Schedules (`rho_schedule`, `mu_schedule`: increase | decrease | constant; `gamma_schedule`:
decrease | constant) as in tfg.py. log f is the verifier's score (a differentiable verifier:
clip, image_reward, aesthetic, ...). Presets name the earlier methods TFG unifies (the
reference's table of special cases); explicit options override a preset's values.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

from ..errors import TTSInputError
from ..params import Param, ParamSpec

#: guidance's name among a call's features and its option's name
ENTRY = "reward_guidance"
SCHEDULES = ("increase", "decrease", "constant")
PRESET_NAMES = ("tfg", "dps", "freedom", "ugd", "mpgd", "lgd")

GUIDANCE_PARAMS = ParamSpec("reward guidance", [
    Param("verifier", str, None, "the differentiable verifier whose score guides (clip, image_reward, aesthetic, "
                                 "or an ensemble with mode=zscore); options: verifier_options of the same name"),
    Param("preset", str, "tfg", "a named special case of TFG: tfg, dps, freedom, ugd, mpgd, lgd (its values "
                                "for the knobs below; explicit knobs override it)", choices=PRESET_NAMES),
    Param("rho", float, None, "variance guidance strength rho-bar: gradient w.r.t. x_t through the denoiser "
                              "(1 NFE + a denoiser backward = 3 NFE per row and step; 0: off)", low=0.0),
    Param("mu", float, None, "mean guidance strength mu-bar: gradient w.r.t. the x0 estimate (0: off)", low=0.0),
    Param("iterations", int, None, "mean-guidance iterations N_iter per step", low=0),
    Param("gamma", float, None, "implicit-dynamics noise gamma-bar (0: no smoothing of log f)", low=0.0),
    Param("samples", int, None, "implicit-dynamics samples K per gradient (reward gradients per row)", low=1),
    Param("n_recur", int, None, "recurrence: passes per step (1: none; each extra pass costs 1 NFE)", low=1),
    Param("rho_schedule", str, None, "how rho varies over steps (mean = rho)", choices=SCHEDULES),
    Param("mu_schedule", str, None, "how mu varies over steps (mean = mu)", choices=SCHEDULES),
    Param("gamma_schedule", str, None, "decrease: gamma * s_t (the noise level); constant: gamma",
          choices=("decrease", "constant")),
])

#: TFG's defaults (utils/configs.py) and the special cases' settings (the reference's table);
#: strengths are the unified code's bar values, i.e. the user's step size s of each method
PRESETS: dict[str, dict[str, Any]] = {
    "tfg": dict(rho=1.0, mu=1.0, iterations=1, gamma=0.01, samples=4, n_recur=1,
                rho_schedule="increase", mu_schedule="increase", gamma_schedule="decrease"),
    "dps": dict(rho=1.0, mu=0.0, iterations=0, gamma=0.0, samples=1, n_recur=1,
                rho_schedule="constant", mu_schedule="constant", gamma_schedule="decrease"),
    "lgd": dict(rho=1.0, mu=0.0, iterations=0, gamma=1.0, samples=4, n_recur=1,
                rho_schedule="constant", mu_schedule="constant", gamma_schedule="decrease"),
    "freedom": dict(rho=1.0, mu=0.0, iterations=0, gamma=0.0, samples=1, n_recur=2,
                    rho_schedule="increase", mu_schedule="constant", gamma_schedule="decrease"),
    "mpgd": dict(rho=0.0, mu=1.0, iterations=1, gamma=0.0, samples=1, n_recur=1,
                 rho_schedule="constant", mu_schedule="constant", gamma_schedule="decrease"),
    "ugd": dict(rho=1.0, mu=1.0, iterations=1, gamma=0.0, samples=1, n_recur=2,
                rho_schedule="constant", mu_schedule="constant", gamma_schedule="decrease"),
}


@dataclass(frozen=True)
class RewardGuidance:
    """TFG settings with every knob resolved (see the module docstring)."""

    verifier: str | None = None
    preset: str = "tfg"
    rho: float = 1.0
    mu: float = 1.0
    iterations: int = 1
    gamma: float = 0.01
    samples: int = 4
    n_recur: int = 1
    rho_schedule: str = "increase"
    mu_schedule: str = "increase"
    gamma_schedule: str = "decrease"

    def __post_init__(self) -> None:
        GUIDANCE_PARAMS.validate(asdict(self))

    @classmethod
    def build(cls, **options: Any) -> "RewardGuidance":
        """From options (validated): the preset's values, then the options given."""
        opts = GUIDANCE_PARAMS.validate({k: v for k, v in options.items() if v is not None})
        preset = opts.get("preset", "tfg")
        return cls(**{**PRESETS[preset], **opts, "preset": preset})

    @classmethod
    def parse(cls, value: Any) -> "RewardGuidance | None":
        """What `reward_guidance=` accepts: None / False (off), a verifier name (TFG's defaults),
        a dict of options (`verifier`, `preset`, knobs), or a RewardGuidance."""
        if value is None or value is False:
            return None
        if isinstance(value, RewardGuidance):
            return value
        if isinstance(value, str):
            return cls.build(verifier=value)
        if isinstance(value, dict):
            return cls.build(**value)
        raise TTSInputError(f"reward_guidance={value!r} is not valid: pass a verifier name (e.g. 'clip'), a dict"
                            f" of {', '.join(GUIDANCE_PARAMS.names())}, or a RewardGuidance")

    @classmethod
    def from_cli(cls, verifier: str | None, options: Iterable[str] = ()) -> "RewardGuidance | None":
        """`--reward-guidance VERIFIER` and `--reward-guidance-option KEY=VALUE` (options need it)."""
        opts = GUIDANCE_PARAMS.parse(options)
        if verifier is None:
            if opts:
                raise TTSInputError("--reward-guidance-option needs --reward-guidance VERIFIER")
            return None
        return cls.build(**{**opts, "verifier": verifier})

    def nfe_per_step(self) -> int:
        """NFE one particle-step costs with this guidance (core/budget.py's rule): per pass,
        the denoiser forward (1) and, with variance guidance, a forward with graph (1) and its
        backward (2)."""
        return self.n_recur * (1 + (3 if self.rho > 0 else 0))

    def reward_grads_per_step(self) -> int:
        """Reward-gradient rows one particle-step costs (verifier calls)."""
        per = (self.samples if self.rho > 0 else 0) + (self.iterations * self.samples if self.mu > 0 else 0)
        return self.n_recur * per

    def settings(self) -> dict[str, Any]:
        return {ENTRY: {f.name: getattr(self, f.name) for f in fields(self)}}
