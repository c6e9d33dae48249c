"""The wheel carries the default world: build it, install it outside the repository
(`pip install --no-deps --target`, dependencies from this environment), and run the README's
main command from another directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pip_can_build() -> str | None:
    """None when `pip wheel --no-build-isolation` can run here, else why not."""
    r = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if r.returncode != 0:
        return "pip is not available"
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return "setuptools (the build backend) is not installed"
    return None


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    why = _pip_can_build()
    if why:
        pytest.skip(f"cannot build a wheel: {why}")
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a clean copy: an in-tree build/ folder could carry stale files into the wheel
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                            ".pytest_cache", "out"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp / "dist").glob("tts_diffusion-*.whl")
    target = tmp / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp / "cache"))
    return wheel, target, env, tmp


def test_wheel_holds_the_assets(installed):
    wheel, *_ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("tts_diffusion/assets/shapes-model/model_index.json",
                 "tts_diffusion/assets/shapes-model/transformer/diffusion_pytorch_model.safetensors",
                 "tts_diffusion/assets/shapes-clip/open_clip_model.safetensors",
                 "tts_diffusion/assets/prompts/shapes_eval.json", "tts_diffusion/assets/prompts/shapes_eval_v2.json",
                 "tts_diffusion/assets/prompts/shapes_hard.json"):
        assert need in names, need


def test_installed_wheel_generates_from_another_directory(installed):
    _, target, env, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    script = target / "bin" / "tts-diffusion"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "tts_diffusion.cli"]
    r = subprocess.run([*cmd, "generate", "two red circles", "--budget", "20", "--device", "cpu", "--threads", "1",
                        "--quiet", "--out", "x.png"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (work / "x.png").stat().st_size > 0
    side = json.loads((work / "x.json").read_text())
    assert Path(side["model"]["path"]).is_relative_to(target.resolve())  # the installed copy, not the repository
    assert side["prompt"] == "a photo of two red circles"
    listing = subprocess.run([*cmd, "list"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert listing.returncode == 0 and "(missing)" not in listing.stdout and str(target.resolve()) in listing.stdout
