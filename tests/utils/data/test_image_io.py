"""utils.data.image_io.imread: the same pixels as cv2.imread for every kind of file, faster for plain JPEGs."""
import cv2
import numpy as np
import pytest
from PIL import Image

from utils.data import image_io
from utils.data.image_io import imread, jpeg_orientation


def photo(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (0, 0), 2)


def save_exif(path, img, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(path, exif=exif.tobytes())


def assert_same_as_cv2(path):
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR)
    got = imread(str(path))
    assert expected is not None and got is not None
    assert got.shape == expected.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["colour", "grey", "progressive", "cmyk", "png", "png16", "rgba", "bmp"])
def test_imread_equals_cv2(tmp_path, kind):
    img = photo()
    path = tmp_path / ("a.png" if kind.startswith("png") or kind == "rgba" else "a.bmp" if kind == "bmp" else "a.jpg")
    if kind == "colour" or kind == "bmp":
        cv2.imwrite(str(path), img)
    elif kind == "grey":
        Image.fromarray(img[..., 0]).save(path)
    elif kind == "progressive":
        Image.fromarray(img).save(path, progressive=True)
    elif kind == "cmyk":
        Image.fromarray(img).convert("CMYK").save(path)
    elif kind == "png":
        cv2.imwrite(str(path), img)
    elif kind == "png16":
        cv2.imwrite(str(path), img.astype(np.uint16) * 257)
    else:
        cv2.imwrite(str(path), np.dstack((img, np.full(img.shape[:2], 128, np.uint8))))
    assert_same_as_cv2(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_imread_applies_exif_orientation_as_cv2(tmp_path, orientation):
    path = tmp_path / "exif.jpg"
    save_exif(path, photo(40, 70), orientation)
    assert jpeg_orientation(path.read_bytes()) == orientation
    assert_same_as_cv2(path)
    if orientation in (5, 6, 7, 8):
        assert imread(str(path)).shape[:2] == (70, 40)


def test_jpeg_orientation_of_odd_headers():
    assert jpeg_orientation(b"") == 1
    assert jpeg_orientation(b"\x89PNG\r\n") == 1
    assert jpeg_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00XXbroken") == 1  # bad TIFF header
    assert jpeg_orientation(b"\xff\xd8\xff\xe1\x00") == 1  # cut inside a marker


def test_imread_truncated_jpeg_decodes_as_cv2(tmp_path):
    path = tmp_path / "cut.jpg"
    cv2.imwrite(str(path), photo(120, 160))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # damaged tail: cv2 still decodes the top
    assert_same_as_cv2(path)


def test_imread_unreadable_gives_none(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    assert imread(str(tmp_path / "junk.jpg")) is None
    assert imread(str(tmp_path / "missing.jpg")) is None


def test_imread_plain_jpeg_takes_the_fast_decoder(tmp_path, monkeypatch):
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), photo())
    expected = cv2.imread(str(path))

    def no_cv2(*args, **kwargs):
        raise AssertionError("cv2 used for a plain JPEG")

    monkeypatch.setattr(image_io.cv2, "imread", no_cv2)
    np.testing.assert_array_equal(imread(str(path)), expected)
