"""records/files.py: output paths checked up front, atomic writes, sidecars never replace a
foreign file."""
import json

import pytest
import torch
from PIL import Image

from tts_diffusion.records.files import atomic_write, check_output_path, image_format, is_sidecar, save_json
from tts_diffusion.records.result import Candidate, SearchResult
from tts_diffusion.errors import TTSInputError


def _result(score=0.5):
    img = torch.full((3, 8, 8), 200, dtype=torch.uint8)
    best = Candidate(score=score, nfe=4, seed=1, image=img)
    return SearchResult("a cat", best, [best], [], 4, 1, {}, {"seed": 1})


@pytest.mark.parametrize("ext,ok", [(".png", True), (".PNG", True), (".jpg", True), (".jpeg", True),
                                    (".webp", True), (".bmp", True), (".json", False), (".txt", False),
                                    (".xbm", False), ("", False)])
def test_image_formats(tmp_path, ext, ok):
    assert (image_format(tmp_path / f"a{ext}") is not None) == ok
    if ok:
        check_output_path(tmp_path / f"a{ext}")
    else:
        with pytest.raises(TTSInputError):
            check_output_path(tmp_path / f"a{ext}")


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_save_writes_image_and_sidecar_and_recognises_its_own(tmp_path):
    image, side = _result().save(tmp_path / "best.jpg")
    assert side == tmp_path / "best.json" and is_sidecar(side) and image.stat().st_size > 0
    _result(0.9).save(tmp_path / "best.jpg")  # rerun: replaces its own sidecar
    assert json.loads(side.read_text())["best"]["score"] == 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.jpg", "best.json"]


@pytest.mark.parametrize("content", ['{"prompt": "x"}', "[1]", "not json", ""])
def test_foreign_sidecar_is_never_replaced(tmp_path, content):
    (tmp_path / "data.json").write_text(content)
    with pytest.raises(TTSInputError, match="not a tts-diffusion sidecar"):
        _result().save(tmp_path / "data.png")
    assert (tmp_path / "data.json").read_text() == content and not (tmp_path / "data.png").exists()


def test_interrupted_flag_in_sidecar(tmp_path):
    res = _result()
    res.interrupted = True
    assert res.to_dict()["interrupted"] is True and "interrupted" not in _result().to_dict()
    save_json(res.to_dict(), tmp_path / "s.json")
    assert is_sidecar(tmp_path / "s.json")


def test_rgba_result_is_written_as_png_only(tmp_path):
    """An RGBA result (rgba=True) keeps its alpha only in PNG: another format is refused
    before any file is written; a .png gets the RGBA image, the RGB image and the matte."""
    res = _result()
    res.alpha = torch.full((8, 8), 128, dtype=torch.uint8)
    with pytest.raises(TTSInputError, match="PNG"):
        res.save(tmp_path / "cut.jpg")
    assert list(tmp_path.iterdir()) == []
    image, sidecar = res.save(tmp_path / "cut.png")
    assert Image.open(image).mode == "RGBA" and (tmp_path / "cut.alpha.png").exists()
    assert (tmp_path / "cut.rgb.png").exists() and sidecar.exists()
