"""Ctrl-C during a long search: the best image found so far is written (its sidecar marked
"interrupted"), the exit code is 130 and no temporary file is left behind."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(tmp_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "tts_diffusion.cli", "generate", "a photo of a red circle", "--device", "cpu",
           "--budget", "100000", "-o", "round_size=1", "--out", str(tmp_path / "best.png"), *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path)


def _read_until(proc, pattern, timeout=240):
    """Collect stderr in a thread until `pattern(text)` holds; returns the text so far."""
    buf = []
    done = threading.Event()

    def pump():
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf.append(chunk.decode(errors="replace"))
            if pattern("".join(buf)):
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
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
    assert "Traceback" not in err and "interrupted after" in err
    side = json.loads((tmp_path / "best.json").read_text())
    assert side["interrupted"] is True and 20 <= side["nfe"] < 100000
    assert side["best"]["score"] in (0.0, 1.0) and side["settings"]["budget"] == 100000
    from PIL import Image

    assert Image.open(tmp_path / "best.png").size == (64, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.png"]


def test_ctrl_c_before_any_candidate_writes_nothing(tmp_path):
    proc = _start(tmp_path, "--steps", "1000")  # the first candidate takes 1000 denoiser calls
    text = _read_until(proc, lambda t: 0 < _nfe(t) < 1000)
    proc.send_signal(signal.SIGINT)
    proc.wait(120)
    assert proc.returncode == 130, text()
    assert "Traceback" not in text() and "nothing written" in text()
    assert list(tmp_path.iterdir()) == []
