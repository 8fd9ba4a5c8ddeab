"""utils.data.augment: boxes stay consistent with pixels through every warp, plus pinned formulas.

The key check draws filled rectangles of distinct saturated colours on a black background, records
their boxes, runs an augmentation and compares each surviving label with the pixel extent of its
colour in the output (class index = colour index, so each label names its colour).
"""
import types

import cv2
import numpy as np
import pytest

from utils.data import augment as A

# Saturated BGR colours: any two differ by 255 in some channel, so a per-channel tolerance of 100
# separates them, and also separates them from black (background, 0-padding) and grey 114 (fill).
COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
                    (255, 255, 255)], dtype=np.int32)
TOL = 100


def draw(h, w, rects, first_colour=0):
    """A black h x w image with rects [(x1, y1, x2, y2)] filled in colours first_colour, ... -> (img, labels)."""
    img = np.zeros((h, w, 3), np.uint8)
    rows = []
    for k, (x1, y1, x2, y2) in enumerate(rects, first_colour):
        img[y1:y2, x1:x2] = COLOURS[k]
        rows.append((k, x1, y1, x2, y2))
    return img, np.array(rows, np.float32).reshape(-1, 5)


def extent(img, colour, tol=TOL):
    """Pixel bounding box (x1, y1, x2, y2), edge coordinates, of the pixels within tol of colour (per
    channel); None if there are none."""
    colour = np.asarray(colour)
    mask = cv2.inRange(img, np.clip(colour - tol + 1, 0, 255), np.clip(colour + tol - 1, 0, 255))  # [H, W]
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return None
    return np.array([x, y, x + w, y + h], np.float64)


def assert_boxes_match_pixels(img, labels, atol=1.5, colours=COLOURS, tol=TOL):
    """Every label's box equals its colour's pixel extent within atol px."""
    assert len(labels), "the test needs surviving labels"
    for row in labels:
        ext = extent(img, colours[int(row[0])], tol)
        assert ext is not None, f"class {int(row[0])} has a label {row[1:]} but no pixels"
        np.testing.assert_allclose(ext, row[1:5], atol=atol, err_msg=f"class {int(row[0])}")


def assert_boxes_contain_pixels(img, labels, atol=1.5):
    """Every label's box contains its colour's pixel extent (within atol px)."""
    assert len(labels)
    for row in labels:
        ext = extent(img, COLOURS[int(row[0])])
        assert ext is not None, f"class {int(row[0])} has a label but no pixels"
        assert (ext[:2] >= row[1:3] - atol).all() and (ext[2:] <= row[3:5] + atol).all(), (ext, row)


def visible_classes(img, classes):
    """The classes among `classes` whose colour appears in img."""
    return {int(k) for k in classes if extent(img, COLOURS[int(k)]) is not None}


def scene(h=240, w=320):
    """A test image with 4 well-separated rectangles of different shapes."""
    return draw(h, w, [(20, 30, 90, 100), (150, 20, 300, 60), (40, 140, 80, 220), (180, 120, 290, 210)])


# ----------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("hw, new_shape, kw", [
    ((240, 320), (640, 640), {}),                   # scale up, pad top/bottom
    ((240, 320), 416, {}),                           # int size
    ((360, 320), (320, 480), {}),                    # scale down, pad left/right
    ((240, 320), (640, 640), {"auto": True}),        # pad to a stride multiple only
    ((240, 320), (640, 640), {"scaleup": False}),    # no upscaling
    ((237, 333), (512, 384), {"mode": "topleft"}),   # official preproc
    ((240, 320), (640, 640), {"mode": "topleft", "auto": True}),
])
def test_letterbox_boxes_follow_pixels(hw, new_shape, kw):
    img, labels = scene(*hw)
    out, (rw, rh), (left, top) = A.letterbox(img, new_shape, **kw)
    th, tw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    if kw.get("auto"):
        assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0 and out.shape[0] <= th and out.shape[1] <= tw
    else:
        assert out.shape[:2] == (th, tw)
    if kw.get("mode") == "topleft":
        assert (left, top) == (0, 0)
    mapped = labels.copy()
    mapped[:, [1, 3]] = labels[:, [1, 3]] * rw + left
    mapped[:, [2, 4]] = labels[:, [2, 4]] * rh + top
    assert_boxes_match_pixels(out, mapped, atol=1.0)


def test_letterbox_center_is_yolov5():
    # 427x640 -> 640: r = 1, dh = 213 split 106 top / 107 bottom (YOLOv5's round(d/2 -+ 0.1)).
    img = np.full((427, 640, 3), 7, np.uint8)
    out, ratio, pad = A.letterbox(img, 640)
    assert ratio == (1.0, 1.0) and pad == (0, 106)
    assert (out[:106] == 114).all() and (out[106:533] == 7).all() and (out[533:] == 114).all()
    # 100x150 -> (200, 200): r = 4/3, size round(200), round(133.33) = 200x133, dh = 67 -> 33 / 34.
    out, ratio, pad = A.letterbox(np.zeros((100, 150, 3), np.uint8), (200, 200))
    assert ratio == (4 / 3, 4 / 3) and pad == (0, 33) and out.shape == (200, 200, 3)
    assert (out[33:166] == 0).all() and (out[166:] == 114).all()
    # Odd horizontal padding: 640x427 -> 640, dw = 213 -> 106 left / 107 right.
    out, ratio, pad = A.letterbox(np.full((640, 427, 3), 7, np.uint8), 640)
    assert pad == (106, 0) and (out[:, :106] == 114).all() and (out[:, 106:533] == 7).all()
    # auto: 100x150 -> 640 gives 427x640 resized, pad 213 % 32 = 21 -> 10 / 11, output 448x640.
    out, _, pad = A.letterbox(np.zeros((100, 150, 3), np.uint8), 640, auto=True)
    assert out.shape == (448, 640, 3) and pad == (0, 10)
    # scaleup=False keeps a small image's size and only pads.
    out, ratio, pad = A.letterbox(np.zeros((100, 150, 3), np.uint8), 640, scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (245, 270) and out.shape == (640, 640, 3)


def official_preproc_formula(img, input_size):
    """Official YOLOX preproc, transcribed (without the CHW transpose and float cast)."""
    padded = np.ones((input_size[0], input_size[1], 3), dtype=np.uint8) * 114
    r = min(input_size[0] / img.shape[0], input_size[1] / img.shape[1])
    resized = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    padded[: int(img.shape[0] * r), : int(img.shape[1] * r)] = resized
    return padded, r


@pytest.mark.parametrize("hw, size", [((237, 333), (640, 640)), ((480, 640), (416, 416)), ((500, 375), (640, 480)),
                                      ((640, 640), (640, 640))])
def test_letterbox_topleft_equals_official_formula(hw, size):
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    out, ratio, pad = A.letterbox(img, size, mode="topleft")
    expected, r = official_preproc_formula(img, size)
    assert pad == (0, 0) and ratio == (r, r)
    np.testing.assert_array_equal(out, expected)


def test_letterbox_topleft_equals_official_preproc(yolox_pkg):
    from yolox.data.data_augment import preproc

    img = np.random.default_rng(1).integers(0, 256, (301, 411, 3), dtype=np.uint8)
    chw, r = preproc(img, (416, 512))
    out, ratio, pad = A.letterbox(img, (416, 512), mode="topleft")
    assert ratio == (r, r) and pad == (0, 0)
    np.testing.assert_array_equal(out, chw.transpose(1, 2, 0).astype(np.uint8))


def test_letterbox_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of \('center', 'topleft'\), got 'left'"):
        A.letterbox(np.zeros((8, 8, 3), np.uint8), 16, mode="left")


# ----------------------------------------------------------------------------- random_perspective
@pytest.mark.parametrize("seed", range(6))
def test_random_perspective_translate_scale_keeps_boxes_exact(seed):
    img, labels = scene()
    out, new = A.random_perspective(img, labels, np.random.default_rng(seed), degrees=0, translate=0.1,
                                    scale=0.5, shear=0)
    assert out.shape == img.shape and new.dtype == np.float32
    assert_boxes_match_pixels(out, new, atol=1.5)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("perspective", [0.0, 2e-4])
def test_random_perspective_rotation_shear_boxes_contain_pixels(seed, perspective):
    img, labels = scene()
    out, new = A.random_perspective(img, labels, np.random.default_rng(seed), degrees=30, translate=0.1,
                                    scale=0.3, shear=10, perspective=perspective)
    assert_boxes_contain_pixels(out, new, atol=1.5)
    # The min/max of a rectangle's warped corners bounds the warped quadrilateral exactly, so boxes
    # that were not clipped by the output border are tight too.
    inside = (new[:, 1] > 0) & (new[:, 2] > 0) & (new[:, 3] < out.shape[1]) & (new[:, 4] < out.shape[0])
    if inside.any():
        assert_boxes_match_pixels(out, new[inside], atol=2.0)


@pytest.mark.parametrize("perspective", [0.0, 1e-4])
def test_random_perspective_matrix_is_yolov5s(perspective):
    """YOLOv5's M = T @ S @ R @ P @ C, rebuilt from the same draws in YOLOv5's order."""
    img, labels = scene()
    kw = dict(degrees=15, translate=0.2, scale=0.4, shear=5, perspective=perspective, border=(-20, 30))
    out, new = A.random_perspective(img, labels, np.random.default_rng(11), **kw)
    rng = np.random.default_rng(11)
    height, width = 240 - 40, 320 + 60
    C, P, R, S, T = (np.eye(3) for _ in range(5))
    C[:2, 2] = -160, -120
    P[2, :2] = rng.uniform(-perspective, perspective), rng.uniform(-perspective, perspective)
    a, s = rng.uniform(-15, 15), rng.uniform(0.6, 1.4)
    c, si = s * np.cos(np.radians(a)), s * np.sin(np.radians(a))
    R[:2, :2] = [[c, si], [-si, c]]  # cv2.getRotationMatrix2D about (0, 0)
    S[0, 1], S[1, 0] = np.tan(np.radians(rng.uniform(-5, 5))), np.tan(np.radians(rng.uniform(-5, 5)))
    T[0, 2], T[1, 2] = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    M = T @ S @ R @ P @ C
    if perspective:
        expected = cv2.warpPerspective(img, M, (width, height), borderValue=(114, 114, 114))
    else:
        expected = cv2.warpAffine(img, M[:2], (width, height), borderValue=(114, 114, 114))
    np.testing.assert_array_equal(out, expected)
    # Boxes: corners through M, perspective-divided, min/max, clipped; here no box is filtered.
    corners = np.stack(np.broadcast_arrays(labels[:, [1, 3, 1, 3]], labels[:, [2, 2, 4, 4]]), -1)  # [n, 4, 2]
    xyw = np.concatenate((corners, np.ones((len(labels), 4, 1))), -1) @ M.T  # [n, 4, 3]
    xy = xyw[..., :2] / xyw[..., 2:]
    boxes = np.concatenate((xy.min(1), xy.max(1)), 1).clip(0, [width, height, width, height])
    assert len(new) == len(labels)
    np.testing.assert_allclose(new[:, 1:], boxes, atol=1e-3)


@pytest.mark.parametrize("seed", range(8))
def test_scale_shift_path_is_warp_affine_of_the_matrix_it_returns(seed):
    """No rotation or shear: one resize of the visible rectangle. It equals warpAffine with the M it
    reports up to interpolation rounding, and that M is within a pixel of the requested one."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (300, 400, 3)).astype(np.uint8), (0, 0), 3)
    s = rng.uniform(0.4, 1.6)
    M = np.array([[s, 0, rng.uniform(-250, 150)], [0, s, rng.uniform(-200, 150)], [0, 0, 1.0]])
    out, applied = A._scale_shift(img, M, 256, 192, (114.0, 114.0, 114.0))
    expected = cv2.warpAffine(img, applied[:2], (256, 192), borderValue=(114, 114, 114))
    assert out.shape == (192, 256, 3)
    # the image's outermost pixel ring differs: warpAffine blends it with the fill, resize does not
    inner = cv2.warpAffine(np.ones(img.shape[:2], np.uint8), applied[:2], (256, 192), flags=cv2.INTER_NEAREST)
    inner = cv2.erode(inner, np.ones((5, 5), np.uint8)).astype(bool) | ~cv2.dilate(inner, np.ones((5, 5))).astype(bool)
    diff = np.abs(out.astype(int) - expected)[inner]
    assert inner.mean() > 0.5 and diff.mean() < 0.3 and diff.max() <= 2
    # where the image lands in the output, the two maps agree to under a pixel
    corners = np.array([[0, 0, 1], [399, 299, 1]], float)
    inside = ((corners @ M.T)[:, :2] >= 0).all(1) & ((corners @ M.T)[:, :2] < [256, 192]).all(1)
    assert np.abs((corners @ applied.T - corners @ M.T)[inside]).max(initial=0) < 1.0


def test_random_perspective_border_changes_output_size():
    img, labels = scene(200, 300)
    out, new = A.random_perspective(img, labels, np.random.default_rng(0), border=(-50, 20))
    assert out.shape == (100, 340, 3)
    if len(new):
        assert_boxes_match_pixels(out, new, atol=1.5)
    with pytest.raises(ValueError, match="leaves no output"):
        A.random_perspective(img, labels, np.random.default_rng(0), border=(-100, 0))


def test_random_perspective_identity_draws_leave_image_unchanged():
    img, labels = scene()
    out, new = A.random_perspective(img, labels, np.random.default_rng(0), translate=0, scale=0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(new, labels)


# ----------------------------------------------------------------------------- box_candidates
def test_box_candidates_drops_tiny_and_degenerate_boxes():
    before = np.array([[0, 0, 100, 100]] * 6, np.float64).T  # [4, 6]
    after = np.array([
        [0, 0, 50, 50],     # keep: 25% of the area
        [0, 0, 2, 50],      # drop: width 2 is not > 2
        [0, 0, 30, 30],     # drop: 9% of the area
        [0, 0, 3, 350],     # drop: aspect ratio 117 >= 100
        [10, 10, 10, 10],   # drop: empty
        [0, 0, 100, 100],   # keep: unchanged
    ], np.float64).T
    np.testing.assert_array_equal(A.box_candidates(before, after), [True, False, False, False, False, True])
    # Thresholds are parameters.
    np.testing.assert_array_equal(A.box_candidates(before, after, area_thr=0.05)[2], True)


# ----------------------------------------------------------------------------- mosaic
def mosaic_inputs(size):
    """4 images with long side `size` holding the 7 colours between them."""
    s = size
    imgs, labs = [], []
    specs = [((s, s * 3 // 4), [(10, 20, 100, 120), (130, 200, 220, 300)]),
             ((s * 2 // 3, s), [(40, 30, 150, 150), (200, 60, 300, 180)]),
             ((s, s), [(60, 60, 260, 260)]),
             ((s * 3 // 4, s), [(20, 20, 120, 100), (180, 120, 300, 220)])]
    first = 0
    for (h, w), rects in specs:
        img, lab = draw(h, w, rects, first)
        first += len(rects)
        imgs.append(img)
        labs.append(lab)
    return imgs, labs


@pytest.mark.parametrize("seed", range(5))
def test_mosaic4_then_crop_keeps_boxes_exact(seed):
    size = 320
    imgs, labs = mosaic_inputs(size)
    rng = np.random.default_rng(seed)
    canvas, labels = A.mosaic4(imgs, labs, size, rng)
    assert canvas.shape == (640, 640, 3) and labels.shape == (7, 5)
    visible = (labels[:, 3] > labels[:, 1]) & (labels[:, 4] > labels[:, 2])
    assert set(labels[visible, 0].astype(int)) == visible_classes(canvas, range(7))
    assert_boxes_match_pixels(canvas, labels[visible], atol=0)  # integer shifts: exact
    out, labels = A.random_perspective(canvas, labels, rng, translate=0.1, scale=0.5,
                                       border=(-size // 2, -size // 2))
    assert out.shape == (size, size, 3)
    if len(labels):
        assert_boxes_match_pixels(out, labels, atol=1.5)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("kw", [dict(translate=0.1, scale=0.5), dict(translate=0.3, scale=0.9),
                                dict(degrees=10, shear=2, scale=0.5), dict(perspective=1e-4)])
def test_mosaic4_warped_equals_mosaic4_then_crop(seed, kw):
    """The fused mosaic gives the two-step result exactly and loads only the images that show."""
    size = 320
    imgs, labs = mosaic_inputs(size)
    imgs = [cv2.GaussianBlur(im, (0, 0), 2) for im in imgs]  # texture for the interpolation
    rng = np.random.default_rng(seed)
    canvas, labels = A.mosaic4(imgs, [lb.copy() for lb in labs], size, rng)
    out, new = A.random_perspective(canvas, labels, rng, border=(-size // 2, -size // 2), **kw)
    loaded = []

    def load(k):
        loaded.append(k)
        return imgs[k]

    fused, fused_labels = A.mosaic4_warped(load, [im.shape[:2] for im in imgs], [lb.copy() for lb in labs],
                                           size, np.random.default_rng(seed), **kw)
    np.testing.assert_array_equal(fused, out)
    np.testing.assert_allclose(fused_labels, new, atol=1e-4)
    assert sorted(loaded) == sorted(set(loaded))  # each image at most once
    if len(fused_labels) and kw == dict(translate=0.1, scale=0.5):  # (x0.1 downscales blur edges away)
        assert_boxes_match_pixels(fused, fused_labels, atol=1.5)


def test_mosaic4_warped_skips_images_outside_the_crop_and_checks_sizes():
    size = 320
    imgs, labs = mosaic_inputs(size)
    skipped = 0
    for seed in range(40):
        loaded = []
        A.mosaic4_warped(lambda k: loaded.append(k) or imgs[k], [im.shape[:2] for im in imgs], labs, size,
                         np.random.default_rng(seed), translate=0.1, scale=0.5)
        skipped += 4 - len(loaded)
    assert skipped > 0
    with pytest.raises(ValueError, match="expected size"):
        A.mosaic4_warped(lambda k: imgs[k][:10], [im.shape[:2] for im in imgs], labs, size,
                         np.random.default_rng(0), scale=0.0, translate=0.0)


@pytest.mark.parametrize("seed", range(3))
def test_mosaic4_then_rotated_crop_boxes_contain_pixels(seed):
    imgs, labs = mosaic_inputs(320)
    rng = np.random.default_rng(seed)
    canvas, labels = A.mosaic4(imgs, labs, 320, rng)
    out, labels = A.random_perspective(canvas, labels, rng, degrees=20, shear=5, scale=0.3, border=(-160, -160))
    if len(labels):
        assert_boxes_contain_pixels(out, labels)


def test_mosaic4_centre_range_and_rectangular_size():
    imgs = [np.zeros((96, 128, 3), np.uint8)] * 4
    empty = [np.zeros((0, 5), np.float32)] * 4
    for seed in range(20):
        canvas, labels = A.mosaic4(imgs, empty, (96, 128), np.random.default_rng(seed))
        assert canvas.shape == (192, 256, 3) and labels.shape == (0, 5)
        # The black images meet at the centre, which lies in [size/2, 3*size/2).
        ys, xs = np.nonzero(canvas[..., 0] == 0)
        assert 48 <= ys.min() + 96 <= 144 and 64 <= xs.min() + 128 <= 192


# ----------------------------------------------------------------------------- flips
def test_flips_move_boxes_with_pixels():
    img, labels = scene()
    for flip in (A.flip_lr, A.flip_ud):
        out, new = flip(img, labels)
        assert out.flags["C_CONTIGUOUS"]
        assert_boxes_match_pixels(out, new, atol=0)
        back, old = flip(out, new)
        np.testing.assert_array_equal(back, img)
        np.testing.assert_array_equal(old, labels)


# ----------------------------------------------------------------------------- mixup
def mixup_pair():
    img, labels = draw(320, 320, [(20, 20, 120, 100), (200, 30, 300, 140)])
    img2, labels2 = draw(200, 300, [(10, 20, 90, 110), (150, 50, 280, 180), (100, 130, 140, 190)], first_colour=2)
    return img, labels, img2, labels2


@pytest.mark.parametrize("scale, flip_p", [((0.5, 0.5), 0.0), ((0.5, 0.5), 1.0), ((1.5, 1.5), 0.0),
                                           ((1.5, 1.5), 1.0), ((0.5, 1.5), 0.5)])
@pytest.mark.parametrize("seed", range(3))
def test_mixup_yolox_boxes_follow_pixels(seed, scale, flip_p):
    img, labels, img2, labels2 = mixup_pair()
    # ratio 1 shows only the transformed img2, so its labels can be checked against pixels.
    only2, new = A.mixup_yolox(img, labels, img2, labels2, np.random.default_rng(seed), scale=scale, ratio=1.0,
                               flip_p=flip_p)
    np.testing.assert_array_equal(new[:2], labels)  # img's labels first, unchanged
    # Exactly the img2 objects still in view are labelled, at their pixels.
    assert set(new[2:, 0].astype(int)) == visible_classes(only2, labels2[:, 0])
    if len(new) > 2:
        assert_boxes_match_pixels(only2, new[2:], atol=2.0)
    # The official 0.5/0.5 blend of the same draws.
    mixed, new_half = A.mixup_yolox(img, labels, img2, labels2, np.random.default_rng(seed), scale=scale,
                                    flip_p=flip_p)
    np.testing.assert_array_equal(new_half, new)
    expected = 0.5 * img.astype(np.float32) + 0.5 * only2.astype(np.float32)
    np.testing.assert_array_equal(mixed, expected.astype(np.uint8))


def test_mixup_yolox_drops_boxes_cropped_away():
    img = np.zeros((100, 100, 3), np.uint8)
    img2, labels2 = draw(100, 100, [(90, 90, 100, 100)])  # bottom-right corner
    # jit 2 -> the box is at (180..200) of a 200 px image; the crop offset is < 100, so the box
    # survives only when the offset is > 80; over seeds both cases must occur and stay consistent.
    seen = set()
    for seed in range(30):
        out, new = A.mixup_yolox(img, [], img2, labels2, np.random.default_rng(seed), scale=(2, 2), ratio=1.0, flip_p=0)
        seen.add(len(new))
        if len(new):
            assert_boxes_match_pixels(out, new, atol=2.0)
        else:
            assert extent(out, COLOURS[0]) is None
    assert seen == {0, 1}


def test_mixup_yolox_crop_offsets_as_official():
    # Official draws randint(0, excess - 1): with 1 px of excess the crop never moves.
    img = np.zeros((320, 320, 3), np.uint8)
    img2, labels2 = draw(320, 320, [(100, 100, 150, 150)])
    jit = 321.5 / 320  # int(320 * jit) = 321
    for seed in range(20):
        _, new = A.mixup_yolox(img, [], img2, labels2, np.random.default_rng(seed), scale=(jit, jit), flip_p=0)
        np.testing.assert_allclose(new[0, 1:], np.array([100, 100, 150, 150]) * jit, rtol=1e-6)


def test_mixup_yolox_clips_boxes_to_the_resized_image():
    # A box past img2's letterboxed canvas is clipped to it before the crop (official adjust_box_anns),
    # so it cannot extend into the 0-padding when jit < 1.
    img = np.zeros((320, 320, 3), np.uint8)
    labels2 = np.array([[0, 200, 50, 400, 100]], np.float32)  # x2 beyond a 320-wide image
    _, new = A.mixup_yolox(img, [], np.zeros((320, 320, 3), np.uint8), labels2, np.random.default_rng(0),
                           scale=(0.5, 0.5), flip_p=0)
    np.testing.assert_allclose(new[0, 1:], [100, 25, 160, 50])


def test_mixup_yolox_equals_official(yolox_pkg, monkeypatch):
    """Official MosaicDetection.mixup with its random draws scripted to ours gives the same output."""
    from yolox.data.datasets import mosaicdetection as md

    img, labels, img2, labels2 = mixup_pair()
    for seed, scale in [(0, (0.5, 1.5)), (1, (1.2, 1.4)), (2, (0.6, 0.9)), (3, (1.0, 1.5))]:
        ours_img, ours_labels = A.mixup_yolox(img, labels, img2, labels2, np.random.default_rng(seed), scale=scale)
        # Replay our draws in our order: jit, flip, y offset, x offset (img is 320x320).
        rng = np.random.default_rng(seed)
        jit = rng.uniform(*scale)
        flip = rng.uniform(0.0, 1.0) < 0.5
        ph, pw = max(int(320 * jit), 320), max(int(320 * jit), 320)
        y_off = int(rng.integers(0, ph - 320)) if ph > 320 else 0
        x_off = int(rng.integers(0, pw - 320)) if pw > 320 else 0
        uniforms = iter([jit, 0.9 if flip else 0.1])
        randints = iter([0] + ([y_off] if ph > 320 else []) + ([x_off] if pw > 320 else []))

        def randint(a, b):  # inclusive, like random.randint; ours must fall in official's range
            v = next(randints)
            assert a <= v <= b
            return v

        fake_random = types.SimpleNamespace(uniform=lambda a, b: next(uniforms), randint=randint)
        monkeypatch.setattr(md, "random", fake_random)
        dataset = types.SimpleNamespace(load_anno=lambda i: labels2[:, [1, 2, 3, 4, 0]].astype(np.float64),
                                        pull_item=lambda i: (img2, labels2[:, [1, 2, 3, 4, 0]].astype(np.float64),
                                                             None, None))
        # randint's first call picks the image to mix in (there is one).
        fake_self = types.SimpleNamespace(mixup_scale=scale, _dataset=dataset, __len__=lambda: 1)
        off_img, off_labels = md.MosaicDetection.mixup(fake_self, img, labels[:, [1, 2, 3, 4, 0]].astype(np.float64),
                                                       (320, 320))
        np.testing.assert_array_equal(ours_img, off_img)
        off = off_labels[:, [4, 0, 1, 2, 3]]
        off = off[(off[:, 3] > off[:, 1]) & (off[:, 4] > off[:, 2])]  # we drop the empty boxes official keeps
        np.testing.assert_allclose(ours_labels, off, atol=1e-4)


def test_mixup_yolov5_blends_with_beta_ratio():
    img, labels = scene()
    img2, labels2 = draw(240, 320, [(0, 0, 50, 50)], first_colour=6)
    out, new = A.mixup_yolov5(img, labels, img2, labels2, np.random.default_rng(5))
    r = np.random.default_rng(5).beta(32.0, 32.0)
    exact = img * r + img2 * (1 - r)  # float blend; ours rounds it (addWeighted's float arithmetic: +-1 at .5 ties)
    assert out.dtype == np.uint8 and np.abs(out - exact).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(new, np.concatenate((labels, labels2)))
    with pytest.raises(ValueError, match="same shape"):
        A.mixup_yolov5(img, labels, img2[:100], labels2, np.random.default_rng(0))


# ----------------------------------------------------------------------------- hsv
def test_augment_hsv_zero_gains_is_identity():
    img, _ = scene()
    before = img.copy()
    rng = np.random.default_rng(0)
    assert A.augment_hsv(img, 0, 0, 0, rng) is img
    np.testing.assert_array_equal(img, before)
    assert rng.uniform() == np.random.default_rng(0).uniform()  # drew nothing


def test_augment_hsv_is_multiplicative_on_value():
    # A grey image has S = 0 and H = 0, which any gain keeps; V is multiplied by r[2] and truncated.
    img = np.full((4, 4, 3), 100, np.uint8)
    out = A.augment_hsv(img, 0.5, 0.5, 0.4, np.random.default_rng(3))
    r = np.random.default_rng(3).uniform(-1, 1, 3) * [0.5, 0.5, 0.4] + 1
    assert (out == int(min(100 * r[2], 255))).all()
    # Colour changes but stays in place (in-place, same object).
    col, _ = scene()
    before = col.copy()
    assert A.augment_hsv(col, 0.015, 0.7, 0.4, np.random.default_rng(1)) is col
    assert not np.array_equal(col, before)


def test_augment_hsv_equals_yolov5s_split_lut_merge():
    img, _ = scene()
    img = cv2.GaussianBlur(img, (0, 0), 3)  # many distinct hues
    ours = A.augment_hsv(img.copy(), 0.015, 0.7, 0.4, np.random.default_rng(4))
    r = np.random.default_rng(4).uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))  # YOLOv5's augment_hsv
    x = np.arange(0, 256, dtype=r.dtype)
    luts = ((x * r[0]) % 180).astype(np.uint8), np.clip(x * r[1], 0, 255).astype(np.uint8), \
        np.clip(x * r[2], 0, 255).astype(np.uint8)
    merged = cv2.merge([cv2.LUT(c, lut) for c, lut in zip((hue, sat, val), luts)])
    np.testing.assert_array_equal(ours, cv2.cvtColor(merged, cv2.COLOR_HSV2BGR))


# ----------------------------------------------------------------------------- formats, filters
def test_filter_boxes_keeps_min_side_above_threshold():
    labels = np.array([[0, 0, 0, 10, 10], [1, 0, 0, 1, 10], [2, 0, 0, 10, 1.5], [3, 5, 5, 5, 5]], np.float32)
    np.testing.assert_array_equal(A.filter_boxes(labels)[:, 0], [0, 2])
    np.testing.assert_array_equal(A.filter_boxes(labels, min_side=2)[:, 0], [0])


def test_cxcywh_roundtrip_and_values():
    labels = np.array([[3, 10, 20, 50, 60], [0, 0, 0, 200, 100]], np.float32)
    norm = A.xyxy_to_cxcywh_norm(labels, 200, 100)
    np.testing.assert_allclose(norm, [[3, 0.15, 0.4, 0.2, 0.4], [0, 0.5, 0.5, 1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(A.cxcywh_norm_to_xyxy(norm, 200, 100), labels, atol=1e-4)


# ----------------------------------------------------------------------------- determinism, empties, errors
def run_all(seed):
    """Every random augmentation once, from one seeded generator -> list of arrays."""
    rng = np.random.default_rng(seed)
    imgs, labs = mosaic_inputs(320)
    canvas, labels = A.mosaic4(imgs, labs, 320, rng)
    img, labels = A.random_perspective(canvas, labels, rng, degrees=10, shear=2, perspective=1e-4,
                                       border=(-160, -160))
    img2, labels2 = scene(320, 320)
    mixed, ml = A.mixup_yolox(img, labels, img2, labels2, rng)
    mixed5, ml5 = A.mixup_yolov5(img, labels, img2, labels2, rng)
    hsv = A.augment_hsv(mixed.copy(), 0.015, 0.7, 0.4, rng)
    return [canvas, img, labels, mixed, ml, mixed5, ml5, hsv]


def test_same_seed_same_output():
    a, b, c = run_all(7), run_all(7), run_all(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(x.shape != z.shape or not np.array_equal(x, z) for x, z in zip(a, c))


def test_empty_labels_go_through_every_function():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 80, 3), np.uint8)
    for empty in (np.zeros((0, 5), np.float32), np.zeros((0,)), []):
        out, _, _ = A.letterbox(img, 128)
        assert A.random_perspective(img, empty, rng, degrees=10)[1].shape == (0, 5)
        assert A.mosaic4([img] * 4, [empty] * 4, 80, rng)[1].shape == (0, 5)
        assert A.mixup_yolov5(img, empty, img, empty, rng)[1].shape == (0, 5)
        assert A.mixup_yolox(img, empty, img, empty, rng)[1].shape == (0, 5)
        assert A.flip_lr(img, empty)[1].shape == (0, 5)
        assert A.flip_ud(img, empty)[1].shape == (0, 5)
        assert A.filter_boxes(empty).shape == (0, 5)
        assert A.xyxy_to_cxcywh_norm(empty, 80, 64).shape == (0, 5)
        assert A.cxcywh_norm_to_xyxy(empty, 80, 64).shape == (0, 5)
        assert A.box_candidates(np.zeros((4, 0)), np.zeros((4, 0))).shape == (0,)


def test_bad_inputs_are_named():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator.*got module"):
        A.random_perspective(img, [], np.random)
    with pytest.raises(TypeError, match="got RandomState"):
        A.augment_hsv(img, 0.1, 0.1, 0.1, np.random.RandomState(0))
    with pytest.raises(ValueError, match=r"flip_lr: labels must have shape \[n, 5\].*got \(2, 4\)"):
        A.flip_lr(img, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"mosaic4: labels_list\[2\] must have shape"):
        A.mosaic4([img] * 4, [[], [], np.zeros((1, 4)), []], 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="HxWxC uint8.*float32"):
        A.letterbox(img.astype(np.float32), 16)
    with pytest.raises(ValueError, match="needs 4 images"):
        A.mosaic4([img] * 3, [[]] * 3, 8, np.random.default_rng(0))
