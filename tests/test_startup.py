"""Start-up: `--help`, `--version` and a refused prompt answer without importing torch,
diffusers or transformers; the package's public names still load on first use."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "diffusers", "transformers", "open_clip")

_PROBE = textwrap.dedent("""
    import json, sys
    sys.argv = ["tts-diffusion", *json.loads(sys.argv[1])]
    import tts_diffusion.cli as cli
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code
    print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,))


def _probe(*args: str) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))], capture_output=True, text=True,
                       timeout=120)
    return json.loads(r.stderr.strip().splitlines()[-1]), r.stdout + r.stderr


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["generate", "--help"], ["replay", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    info, output = _probe(*args)
    assert info["code"] == 0, output
    assert info["heavy"] == [], f"{args} imported {info['heavy']}"


def test_version_is_the_package_version():
    import tts_diffusion

    info, output = _probe("--version")
    assert f"tts-diffusion, version {tts_diffusion.__version__}" in output


def test_prompt_outside_the_world_is_refused_before_torch_loads():
    info, output = _probe("generate", "a photo of a purple dragon", "--out", "/nonexistent/x.png")
    assert info["code"] == 2 and info["heavy"] == [], output
    assert "closest prompt that works is 'a photo of a purple circle'" in output


def test_package_names_load_lazily():
    code = ("import sys, tts_diffusion as t; assert 'torch' not in sys.modules; "
            "from tts_diffusion import TTSPipeline, Budget, TTSInputError, available_searchers; "
            "assert 'torch' in sys.modules and TTSPipeline.__name__ == 'TTSPipeline'; "
            "assert 'best_of_n' in available_searchers(); print(sorted(t.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        import tts_diffusion

        tts_diffusion.NoSuchName  # noqa: B018
