"""Tests for impresslearn.data.imagenet_augment: ImageNet crop boxes, train/eval transforms, batches.

These are geometry unit tests, so they use small synthetic images whose pixels encode their own
coordinates (red = x, green = y): a pixel of the output says where in the input it was sampled.
Pillow's bilinear filter interpolates a linear ramp exactly up to uint8 rounding, so an output
pixel whose sample centre lies at input coordinate ``u`` reads ``u - 0.5`` (pixel ``k`` covers
``[k, k + 1)`` and holds ``k``), within a level or so.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from impresslearn.data.imagenet_augment import (
    eval_transform,
    random_resized_crop_box,
    train_transform,
)

LOG_3_4 = math.log(3 / 4)
LOG_4_3 = math.log(4 / 3)
TOLERANCE = 1.5  # uint8 levels: two rounded filter passes plus clamping at the image's edges


class ScriptedRng:
    """A stand-in for numpy's Generator that returns scripted values and records each call."""

    def __init__(self, uniforms=(), integers=(), randoms=()):
        self.uniforms = list(uniforms)
        self.ints = list(integers)
        self.randoms = list(randoms)
        self.calls: list[tuple] = []

    def uniform(self, low, high):
        self.calls.append(("uniform", low, high))
        return self.uniforms.pop(0)

    def integers(self, low, high):
        self.calls.append(("integers", low, high))
        return self.ints.pop(0)

    def random(self):
        self.calls.append(("random",))
        return self.randoms.pop(0)


def coordinate_image(width: int, height: int) -> Image.Image:
    """RGB image with R = x and G = y (both clipped at 255), B = x - (width - 256) (clipped at 0).

    B carries x on the right of images wider than 256, where R saturates.
    """
    x = np.arange(width)[None, :].repeat(height, 0)
    y = np.arange(height)[:, None].repeat(width, 1)
    b = np.clip(x - max(width - 256, 0), 0, 255)
    pixels = np.stack([np.clip(x, 0, 255), np.clip(y, 0, 255), b], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def sampled_coords(start: int, length: int, size: int, limit: int) -> np.ndarray:
    """Input coordinate read by each of ``size`` outputs resampling ``[start, start + length)``."""
    centres = start + (np.arange(size) + 0.5) * length / size
    return np.clip(centres - 0.5, 0, limit - 1)


def assert_samples_box(out: np.ndarray, box: tuple[int, int, int, int], image_size: tuple) -> None:
    """The output's R/G channels read the coordinates of ``box`` resampled to the output size."""
    left, top, w, h = box
    size = out.shape[0]
    xs = sampled_coords(left, w, size, image_size[0])
    ys = sampled_coords(top, h, size, image_size[1])
    red = out[..., 0].astype(float)
    green = out[..., 1].astype(float)
    assert np.abs(red - xs[None, :]).max() <= TOLERANCE
    assert np.abs(green - ys[:, None]).max() <= TOLERANCE


def fallback_box(width: int, height: int) -> tuple[int, int, int, int]:
    """torchvision's central fallback crop for the default ratio range (3/4, 4/3)."""
    in_ratio = width / height
    if in_ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif in_ratio > 4 / 3:
        w, h = int(round(height * 4 / 3)), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


# --- random_resized_crop_box ---------------------------------------------------------------------


def test_crop_box_hand_computed_second_attempt():
    # 200 x 100 image, area 20000.
    # Attempt 1: scale 1.0, log-aspect log(4/3): target 20000, aspect 4/3,
    #   w = round(sqrt(20000 * 4/3)) = round(163.30) = 163, h = round(sqrt(15000)) = round(122.47)
    #   = 122 > 100: does not fit.
    # Attempt 2: scale 0.5, log-aspect log(4/3): target 10000,
    #   w = round(sqrt(13333.3)) = round(115.47) = 115, h = round(sqrt(7500)) = round(86.60) = 87:
    #   fits; top = integers(0, 100 - 87 + 1 = 14) -> 5, left = integers(0, 200 - 115 + 1 = 86) -> 60.
    rng = ScriptedRng(uniforms=[1.0, LOG_4_3, 0.5, LOG_4_3], integers=[5, 60])
    assert random_resized_crop_box(200, 100, rng) == (60, 5, 115, 87)
    draw_scale = ("uniform", 0.08, 1.0)
    draw_ratio = ("uniform", pytest.approx(LOG_3_4), pytest.approx(LOG_4_3))
    assert rng.calls == [
        draw_scale,
        draw_ratio,
        draw_scale,
        draw_ratio,
        ("integers", 0, 14),
        ("integers", 0, 86),
    ]


@pytest.mark.parametrize(
    ("width", "height", "log_aspect", "expected"),
    [
        # Wide 400 x 50 (in_ratio 8 > 4/3), area 20000. Each try: scale 1.0, aspect 3/4 ->
        # w = round(sqrt(15000)) = 122, h = round(sqrt(26666.7)) = 163 > 50. Fallback: h = 50,
        # w = int(round(50 * 4/3)) = round(66.67) = 67, left = (400 - 67) // 2 = 166, top = 0.
        (400, 50, LOG_3_4, (166, 0, 67, 50)),
        # Tall 50 x 400 (in_ratio 1/8 < 3/4). Each try: aspect 4/3 -> w = round(sqrt(26666.7)) = 163
        # > 50. Fallback: w = 50, h = int(round(50 / (3/4))) = 67, top = (400 - 67) // 2 = 166.
        (50, 400, LOG_4_3, (0, 166, 50, 67)),
        # Square 100 x 100 (in range). Each try: aspect 4/3 -> w = round(sqrt(13333.3)) = 115 > 100.
        # Fallback: the whole image.
        (100, 100, LOG_4_3, (0, 0, 100, 100)),
    ],
)
def test_crop_box_fallback_after_ten_misses(width, height, log_aspect, expected):
    rng = ScriptedRng(uniforms=[1.0, log_aspect] * 10)
    assert random_resized_crop_box(width, height, rng) == expected
    assert len(rng.calls) == 20 and all(call[0] == "uniform" for call in rng.calls)


@pytest.mark.parametrize(("width", "height"), [(200, 200), (240, 160), (97, 311)])
def test_seeded_boxes_lie_inside_and_respect_scale_and_ratio(width, height):
    rng = np.random.default_rng(1234)
    area = width * height
    fallback = fallback_box(width, height)
    boxes = [random_resized_crop_box(width, height, rng) for _ in range(2000)]
    sampled = 0
    for left, top, w, h in boxes:
        assert 0 <= left and 0 <= top and 0 < w and 0 < h
        assert left + w <= width and top + h <= height
        if (left, top, w, h) == fallback:
            continue
        sampled += 1
        # w and h are each rounded from the exact sqrt by at most 0.5.
        assert (w + 0.5) * (h + 0.5) >= 0.08 * area
        assert (w - 0.5) * (h - 0.5) <= area
        assert (w + 0.5) / (h - 0.5) >= 3 / 4
        assert (w - 0.5) / (h + 0.5) <= 4 / 3
    assert sampled > 1000
    # Offsets reach both ends of their inclusive range.
    assert any(left == 0 for left, _, _, _ in boxes)
    assert any(top == 0 for _, top, _, _ in boxes)
    assert any(left == width - w for left, _, w, _ in boxes)
    assert any(top == height - h for _, top, _, h in boxes)


def test_seeded_boxes_span_the_scale_range_with_log_uniform_aspect():
    rng = np.random.default_rng(99)
    boxes = np.array([random_resized_crop_box(200, 200, rng) for _ in range(4000)])
    fractions = boxes[:, 2] * boxes[:, 3] / 40000
    assert fractions.min() < 0.1 and fractions.max() > 0.9
    # Log-uniform aspect on a square image: log(w / h) averages 0 (seeds give |mean| < 0.004);
    # an aspect uniform in [3/4, 4/3] instead averages about 0.025.
    assert abs(np.log(boxes[:, 2] / boxes[:, 3]).mean()) < 0.012


def test_crop_box_rejects_empty_image():
    with pytest.raises(ValueError, match="0x10"):
        random_resized_crop_box(0, 10, np.random.default_rng(0))


# --- train_transform -----------------------------------------------------------------------------


def test_train_transform_samples_the_box_and_flip_mirrors():
    image = coordinate_image(240, 180)
    # Area 43200, scale 0.5, aspect 1: w = h = round(sqrt(21600)) = round(146.97) = 147;
    # top = integers(0, 180 - 147 + 1 = 34) -> 20, left = integers(0, 240 - 147 + 1 = 94) -> 50.
    box = (50, 20, 147, 147)
    plain_rng = ScriptedRng(uniforms=[0.5, 0.0], integers=[20, 50], randoms=[0.9])
    plain = train_transform(image, 32, plain_rng)
    assert plain.shape == (32, 32, 3) and plain.dtype == np.uint8
    assert plain_rng.calls[-1] == ("random",)
    assert_samples_box(plain, box, image.size)
    # Corners by hand: x = 50 + 0.5 * 147 / 32 - 0.5 = 52.30 on the left,
    # 50 + 147 - 0.5 * 147 / 32 - 0.5 = 194.20 on the right; y = 22.30 on top, 164.20 at the bottom.
    assert abs(int(plain[0, 0, 0]) - 52.30) <= TOLERANCE
    assert abs(int(plain[0, 0, 1]) - 22.30) <= TOLERANCE
    assert abs(int(plain[-1, -1, 0]) - 194.20) <= TOLERANCE
    assert abs(int(plain[-1, -1, 1]) - 164.20) <= TOLERANCE

    flipped = train_transform(
        image, 32, ScriptedRng(uniforms=[0.5, 0.0], integers=[20, 50], randoms=[0.1])
    )
    np.testing.assert_array_equal(flipped, plain[:, ::-1])


def test_train_transform_with_seeded_rng_follows_its_box_and_flip():
    image = coordinate_image(240, 180)
    flips = set()
    for seed in range(20):
        out = train_transform(image, 32, np.random.default_rng(seed))
        replay = np.random.default_rng(seed)
        box = random_resized_crop_box(240, 180, replay)
        flip = replay.random() < 0.5
        flips.add(flip)
        assert_samples_box(out[:, ::-1] if flip else out, box, image.size)
    assert flips == {True, False}


def test_train_transform_converts_to_rgb():
    gray = Image.fromarray(np.full((40, 50), 77, dtype=np.uint8), "L")
    out = train_transform(gray, 16, np.random.default_rng(0))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out == 77).all()


# --- eval_transform ------------------------------------------------------------------------------


def test_eval_transform_resizes_shorter_side_and_crops_centre():
    image = coordinate_image(300, 200)
    out = eval_transform(image, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # Shorter side 200 -> 256, longer int(256 * 300 / 200) = 384: 384 x 256. Centre crop:
    # left = round((384 - 224) / 2) = 80, top = round((256 - 224) / 2) = 16. Output column j reads
    # resized column 80 + j, i.e. input x = (80 + j + 0.5) * 300 / 384 - 0.5 (62.39 at j = 0).
    xs = (80 + np.arange(224) + 0.5) * 300 / 384 - 0.5
    ys = (16 + np.arange(224) + 0.5) * 200 / 256 - 0.5
    red = out[..., 0].astype(float)
    green = out[..., 1].astype(float)
    blue_x = out[..., 2].astype(float) + 44  # B = x - 44 for x >= 44
    assert np.abs(green - ys[:, None]).max() <= 1.0
    assert np.abs(red - xs[None, :])[:, xs < 250].max() <= 1.0
    assert np.abs(blue_x - xs[None, :])[:, xs > 50].max() <= 1.0
    assert abs(int(out[0, 0, 0]) - 62.39) <= 1.0 and abs(int(out[0, 0, 1]) - 12.39) <= 1.0
    # The same as Pillow's resize-then-crop with those numbers.
    reference = image.resize((384, 256), Image.Resampling.BILINEAR).crop((80, 16, 304, 240))
    np.testing.assert_array_equal(out, np.asarray(reference))


def test_eval_transform_portrait_and_explicit_resize():
    image = coordinate_image(200, 300)
    # Portrait: 200 x 300 -> 256 x 384; left = 16, top = 80.
    reference = image.resize((256, 384), Image.Resampling.BILINEAR).crop((16, 80, 240, 304))
    np.testing.assert_array_equal(eval_transform(image, 224), np.asarray(reference))
    # resize = 40 on size 32: 40 x 60 (int(40 * 300 / 200) = 60); left = 4, top = 14.
    reference = image.resize((40, 60), Image.Resampling.BILINEAR).crop((4, 14, 36, 46))
    np.testing.assert_array_equal(eval_transform(image, 32, resize=40), np.asarray(reference))


def test_eval_transform_rejects_crop_larger_than_resized_image():
    with pytest.raises(ValueError, match="224x224"):
        eval_transform(coordinate_image(300, 200), 224, resize=200)


# --- batches -------------------------------------------------------------------------------------
