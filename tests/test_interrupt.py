"""Ctrl-C, SIGTERM or SIGHUP during a long search: the best image found so far is written
(its sidecar marked "interrupted" with the signal's name, and the full search's `run` and
`model`, so `replay` reruns it), the exit code is 128 + the signal (130 / 143 / 129), a second
signal exits at once, and no temporary file is left behind. Every searcher keeps a best so
far: its finished candidates, or the Tweedie estimates of its latest denoiser call."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tts_diffusion.testing.helpers import pump_stderr

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(tmp_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tts_diffusion.cli", "generate", "a photo of a red circle", "--device", "cpu",
           "--budget", "100000", "-o", "round_size=1", "--out", str(tmp_path / "best.png"), *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path)


def _read_until(proc, pattern, timeout=240):
    """Collect stderr in a thread until `pattern(text)` holds; returns the text so far."""
    done, buf = pump_stderr(proc, pattern)
    done.wait(timeout)
    return lambda: "".join(buf)


def _nfe(text):
    counts = [int(m) for m in re.findall(r"(\d+)/100000", text)]
    return max(counts, default=0)


def test_ctrl_c_writes_the_best_so_far_and_exits_130(tmp_path):
    proc = _start(tmp_path)
    # 40 NFE charged at 20 steps per candidate: the first candidate has been scored
    text = _read_until(proc, lambda t: _nfe(t) >= 40)
    assert _nfe(text()) >= 40, text()
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    time.sleep(0.2)
    err = text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (SIGINT) after" in err
    side = json.loads((tmp_path / "best.json").read_text())
    assert side["interrupted"] is True and 20 <= side["nfe"] < 100000
    assert side["best"]["score"] in (0.0, 1.0) and side["settings"]["budget"] == 100000
    from PIL import Image

    assert Image.open(tmp_path / "best.png").size == (64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.png"]


def _sha(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_every_stop_signal_writes_the_best_so_far_with_the_default_searcher(tmp_path, sig, code):
    """The default searcher (best_of_n without options), stopped before its first round is
    done: the pair is written, marked with the signal, and carries `run` and `model`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tts_diffusion.cli", "generate", "two red circles", "--device", "cpu",
           "--budget", "100000", "--out", str(tmp_path / "o.png")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    text = _read_until(proc, lambda t: _nfe(t) >= 32)  # the first denoiser call has finished
    proc.send_signal(sig)
    proc.wait(120)
    time.sleep(0.2)
    err = text()
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"interrupted ({sig.name}) after" in err
    side = json.loads((tmp_path / "o.json").read_text())
    assert side["interrupted"] is True and side["signal"] == sig.name
    assert side["run"]["budget"] == 100000 and side["run"]["prompt"] == "two red circles"
    assert side["model"]["sha256"] and side["image_sha256"] == _sha(tmp_path / "o.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.png"]


def test_a_second_signal_exits_at_once_leaving_no_temporaries(tmp_path):
    proc = _start(tmp_path)
    text = _read_until(proc, lambda t: _nfe(t) >= 40)
    # two different signals (the same one twice may merge into one while pending): the
    # first handled stops the search, the second arrives while the best so far is saved
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGINT)
    proc.wait(120)
    time.sleep(0.2)
    err = text()
    assert proc.returncode in (130, 143), err
    assert "second signal (SIG" in err and "exiting now" in err and "Traceback" not in err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names in ([], ["best.json", "best.png"]), names  # never half a pair, never a temporary


def test_an_interrupted_sidecar_replays_the_full_search(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tts_diffusion.cli", "generate", "a photo of a red circle", "--device", "cpu",
           "--steps", "2", "--budget", "600", "--max-batch", "2", "--out", str(tmp_path / "cut.png")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    text = _read_until(proc, lambda t: any(int(m) >= 8 for m in re.findall(r"(\d+)/600", t)))
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    assert proc.returncode == 130, text()
    side = json.loads((tmp_path / "cut.json").read_text())
    assert side["interrupted"] is True and side["nfe"] < 600
    r = subprocess.run([sys.executable, "-m", "tts_diffusion.cli", "replay", str(tmp_path / "cut.json"), "--out",
                        str(tmp_path / "full.png"), "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    full = json.loads((tmp_path / "full.json").read_text())
    assert "interrupted" not in full and full["nfe"] == 600 and full["run"] == side["run"]
