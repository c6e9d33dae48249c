"""The batched torch parts of the oracle against exact references (scipy), and the
properties a batched verifier must have: the verdict on an image does not depend on the
images batched with it, blurry estimates stay cheap, two-colour edges are no third colour."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from tts_diffusion.shapes import render, sample_scenes
from tts_diffusion.shapes.components import euler_numbers, holes, label_components
from tts_diffusion.shapes.detect import MAX_FITS, detect_batch
from tts_diffusion.shapes.grammar import Obj, Scene
from tts_diffusion.shapes.oracle import check_batch
from tts_diffusion.shapes.perturb import perturb
from tts_diffusion.shapes.split import distance_transform

EIGHT = np.ones((3, 3), dtype=bool)
FOUR = ndimage.generate_binary_structure(2, 1)


def _same_partition(labels: np.ndarray, reference: np.ndarray) -> bool:
    """Both label images split the foreground into the same sets of pixels."""
    if not np.array_equal(labels > 0, reference > 0):
        return False
    pairs = set(zip(labels[labels > 0].tolist(), reference[reference > 0].tolist()))
    return len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_connected_components_match_scipy():
    rng = np.random.default_rng(0)
    classes = rng.integers(-2, 3, size=(4, 37, 45))  # negative: no component
    classes[0, 5:30, 10] = 1  # a long thin line that iterative pooling would cut
    labels, n = label_components(torch.from_numpy(classes))
    labels = labels.numpy()
    total = 0
    for b in range(4):
        for c in range(3):
            ref, k = ndimage.label(classes[b] == c, structure=EIGHT)
            total += k
            assert _same_partition(np.where(classes[b] == c, labels[b], 0), ref)
    assert n == total == len(np.unique(labels)) - 1
    snake = np.zeros((1, 33, 65), dtype=np.int64) - 1  # one component with a very long path
    for r in range(1, 33, 4):
        snake[0, r, 1:64] = 0
        snake[0, r:r + 4, 63 if r % 8 == 1 else 1] = 0
    lab4, n4 = label_components(torch.from_numpy(snake), connectivity=4)
    assert n4 == ndimage.label(snake[0] == 0, structure=FOUR)[1] == 1


def test_euler_numbers_and_holes_match_scipy():
    rng = np.random.default_rng(1)
    masks = rng.random((30, 14, 16)) < 0.6
    labels, n = label_components(torch.from_numpy(np.where(masks, 0, -1)))
    euler = euler_numbers(labels, n)
    lab = labels.numpy()
    for k in range(1, n + 1):
        b = int(np.nonzero((lab == k).any((1, 2)))[0][0])
        comp = lab[b] == k
        n_holes = ndimage.label(np.pad(~comp, 1, constant_values=True), structure=FOUR)[1] - 1
        assert 1 - int(euler[k]) == n_holes
    # the pixels `holes` reports are those scipy's hole filling adds (holes cut by the frame are open)
    owners = torch.nonzero(euler < 1).squeeze(1)
    owners = owners[owners > 0]
    flat = labels.view(-1)
    boxes = []
    for k in owners.tolist():
        idx = torch.nonzero(flat == k).squeeze(1)
        img, ys, xs = idx // (14 * 16), (idx // 16) % 14, idx % 16
        boxes.append([int(img[0]), int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())])
    found = holes(labels, owners, torch.tensor(boxes))
    for k, box in zip(owners.tolist(), boxes):
        comp = lab[box[0]] == k
        filled = ndimage.binary_fill_holes(comp, structure=FOUR) & ~comp
        got = np.zeros_like(comp)
        pix = found[found[:, 0] == k, 1] % (14 * 16)
        got.reshape(-1)[pix.numpy()] = True
        assert np.array_equal(got, filled), k


def test_distance_transform_is_exact():
    rng = np.random.default_rng(2)
    masks = rng.random((40, 19, 27)) < 0.8
    ref = np.stack([ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1] for m in masks])
    assert np.abs(distance_transform(torch.from_numpy(masks)).numpy() - ref).max() < 1e-5


def _batch() -> tuple[torch.Tensor, list[str]]:
    """Clean and perturbed renders of every category, blurry ones, and touching shapes at 128 px."""
    scenes = sample_scenes(22, seed=8)
    clean = render(scenes, size=128)
    gen = torch.Generator().manual_seed(3)
    noisy = perturb(clean, gen)
    blurry = perturb(clean, gen, blur=4.0, noise=0.15)
    touching = render([Scene("", "", (Obj("square", "red", 0.4, 0.5, 0.1, 0.2), Obj("square", "red", 0.57, 0.5, 0.1, 0.4)))],
                      size=128)
    images = torch.cat([clean, noisy, blurry, touching])
    prompts = [s.prompt for s in scenes] * 3 + ["a photo of two red squares"]
    return images, prompts


def test_a_verdict_does_not_depend_on_the_other_images_of_the_batch():
    images, prompts = _batch()
    together = check_batch(images, prompts)
    for i in range(0, len(prompts), 7):
        alone = check_batch(images[i:i + 1], prompts[i:i + 1])[0]
        assert alone.correct == together[i].correct and alone.checks == together[i].checks
        for a, b in zip(alone.detections, together[i].detections):
            assert (a.shape, a.color, a.inside) == (b.shape, b.color, b.inside)
            assert a.cx == pytest.approx(b.cx, abs=1e-6) and a.area == pytest.approx(b.area, abs=1e-6)
    assert all(r.correct for r in together[:44]) and together[-1].correct  # clean, perturbed, touching


def test_blurry_estimates_fit_at_most_a_few_components_per_image(monkeypatch):
    import tts_diffusion.shapes.detect as detect_module

    fitted = []
    real = detect_module.fit_templates

    def counting(sample, mass, *args):
        fitted.append(mass.numel())
        return real(sample, mass, *args)

    monkeypatch.setattr(detect_module, "fit_templates", counting)
    scenes = sample_scenes(16, seed=9)
    gen = torch.Generator().manual_seed(4)
    blurry = perturb(render(scenes, size=128), gen, blur=6.0, noise=0.2)
    found = detect_batch(blurry)
    assert len(found) == 16 and all(isinstance(d, list) for d in found)
    assert fitted and fitted[0] <= MAX_FITS * 16  # whole components; split parts come after


@pytest.mark.parametrize("inner, outer", [("red", "yellow"), ("yellow", "red"), ("blue", "red"), ("orange", "purple")])
def test_the_edge_between_two_colours_is_no_third_colour(inner, outer):
    """Red over yellow is orange at the edge, blue over red purple: the edge goes to the two
    colours that make it, blurred or not."""
    scene = Scene("", "", (Obj("square", outer, 0.5, 0.5, 0.28, 0.3), Obj("circle", inner, 0.5, 0.5, 0.12)))
    clean = render([scene], size=128)
    for image in (clean, perturb(clean, torch.Generator().manual_seed(5))):
        dets = detect_batch(image)[0]
        assert sorted((d.shape, d.color) for d in dets) == sorted([("square", outer), ("circle", inner)])
        circle = next(d for d in dets if d.shape == "circle")
        assert dets[circle.inside].shape == "square"
