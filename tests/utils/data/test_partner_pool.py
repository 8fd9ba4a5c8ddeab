"""utils/data/partner_pool.py and the batch path of the loader: where mosaic and mixup find their
other images (hyp partner_batches), how often an image is decoded, and batches handed on without a copy."""
import numpy as np
import pytest
import torch

from utils.data.datasets import LoadImagesAndLabels, create_dataloader
from utils.data.partner_pool import MIN_POOL, PartnerPool, RecentImages

from tests.utils.data.conftest import write_image, write_labels

N_IMAGES = 40


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """40 images, image k with one large box of class k, so a batch's targets name its images."""
    root = tmp_path_factory.mktemp("traced")
    for k in range(N_IMAGES):
        write_image(root / "images" / "train" / f"{k:03d}.jpg", h=64, w=64, seed=k)
        write_labels(root / "labels" / "train" / f"{k:03d}.txt", f"{k} 0.5 0.5 0.9 0.9\n")
    return root / "images" / "train"


def counting_dataset(path, partner_batches, mixup=1.0):
    # scale 0 and translate 0: the mosaic crop is the canvas centre, where all four images show
    hyp = {"mosaic": 1.0, "mixup": mixup, "scale": 0.0, "translate": 0.0, "partner_batches": partner_batches}
    ds = LoadImagesAndLabels(str(path), img_size=64, batch_size=16, augment=True, hyp=hyp, workers=0, seed=1)
    loads = []
    load_image = ds.load_image
    ds.load_image = lambda i: loads.append(i) or load_image(i)
    return ds, loads


def classes_in(samples) -> set:
    return {int(c) for _, t, _, _ in samples for c in t[:, 1].tolist()}


def test_batch_partners_come_from_the_batch_and_each_image_decodes_once(traced):
    ds, loads = counting_dataset(traced, 1)
    batch = list(range(5, 5 + MIN_POOL))
    samples = ds.__getitems__(batch)
    assert classes_in(samples) <= set(batch)  # every tile and every mixed-in mosaic is a batch image
    assert len(classes_in(samples)) > len(batch) // 2
    assert sorted(loads) == sorted(set(loads)) and set(loads) <= set(batch)  # each decoded at most once


def test_partners_from_the_last_batches_reuse_their_decoded_images(traced):
    ds, loads = counting_dataset(traced, 2)
    first, second, third = list(range(0, 16)), list(range(16, 32)), list(range(32, 40))
    ds.__getitems__(first)
    samples = ds.__getitems__(second)
    assert classes_in(samples) <= set(first + second) and classes_in(samples) & set(first)
    assert len(loads) == len(set(loads)) and set(loads) <= set(first + second)  # none decoded twice
    ds.__getitems__(third)
    assert len(loads) == len(set(loads))
    assert list(ds._recent.records) == loads[-32:]  # 2 batches of 16 remembered, the oldest decoded gone


def test_uniform_partners_are_yolov5s_draws(traced):
    ds, loads = counting_dataset(traced, 0)
    batch = list(range(5, 5 + MIN_POOL))
    samples = ds.__getitems__(batch)
    assert classes_in(samples) - set(batch)  # partners from anywhere in the data set
    assert len(loads) > 3 * len(batch)  # a mosaic blended with a mosaic decodes about 8 images
    assert not ds._recent.records


def test_a_sample_read_alone_draws_from_a_pool_of_min_pool(traced):
    ds, loads = counting_dataset(traced, 1, mixup=0.0)
    image, targets, _, _ = ds[7]
    assert image.shape == (3, 64, 64) and 7 in classes_in([(image, targets, None, None)])
    assert len(classes_in([(image, targets, None, None)])) > 1  # not a mosaic of one image four times


def test_partner_batches_must_be_a_whole_number(traced):
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="partner_batches must be a whole number >= 0"):
            LoadImagesAndLabels(str(traced), img_size=64, augment=True, hyp={"partner_batches": bad}, workers=0)


def test_recent_images_belong_to_one_process():
    recent = RecentImages()
    recent.keep({1: "a", 2: "b"}, capacity=3)
    recent.keep({3: "c", 4: "d"}, capacity=3)
    assert list(recent.current()) == [2, 3, 4]  # oldest first, beyond capacity gone
    recent._pid = -1  # as seen from a forked worker
    assert not recent.current()


def test_pool_members_and_draws():
    rng = np.random.default_rng(0)
    pool = PartnerPool(N_IMAGES, [3, 5, 3], lambda i: i, rng, recent={})
    assert pool.members[:2] == [3, 5] and len(pool.members) == MIN_POOL == len(set(pool.members))
    draws = pool.draw(np.random.default_rng(1), 500, exclude=3)
    assert 3 not in draws and set(draws) == set(pool.members) - {3}
    assert sorted(PartnerPool(5, [0, 1], lambda i: i, rng, recent={}).members) == [0, 1, 2, 3, 4]  # all there is
    assert PartnerPool(1, [0], lambda i: i, rng, recent={}).draw(rng, 3, exclude=0) == [0, 0, 0]
    with_recent = PartnerPool(N_IMAGES, list(range(16)), lambda i: i, rng, recent={30: "x", 31: "y"})
    assert with_recent.members == list(range(16)) + [30, 31] and with_recent.load(30) == "x"
    assert with_recent.load(2) == 2 and list(with_recent.decoded) == [2]  # only newly decoded images are kept
    uniform = PartnerPool(N_IMAGES, [3], lambda i: i, rng, recent=None).draw(np.random.default_rng(2), 4, exclude=3)
    assert uniform == np.random.default_rng(2).integers(0, N_IMAGES, 4).tolist()


def test_an_image_that_fails_leaves_the_pool():
    def load(i):
        if i == 2:
            raise OSError("image cannot be decoded: 2.jpg")
        return ("image", i)

    pool = PartnerPool(N_IMAGES, list(range(16)), load, np.random.default_rng(0), recent={})
    assert pool.load(4) is pool.load(4)  # decoded once, then kept
    with pytest.raises(OSError, match="2.jpg"):
        pool.load(2)
    assert 2 not in pool.members and 2 not in pool.draw(np.random.default_rng(0), 300, exclude=0)


def test_a_broken_partner_is_replaced_and_counted(traced, tmp_path):
    images = tmp_path / "images" / "train"
    for k in range(MIN_POOL):
        src = traced / f"{k:03d}.jpg"
        (images / src.name).parent.mkdir(parents=True, exist_ok=True)
        (images / src.name).write_bytes(src.read_bytes())
        write_labels(tmp_path / "labels" / "train" / f"{k:03d}.txt", f"{k} 0.5 0.5 0.9 0.9\n")
    ds = LoadImagesAndLabels(str(images), img_size=64, batch_size=16, augment=True, hyp={"mosaic": 1.0},
                             workers=0)
    (images / "003.jpg").write_bytes(b"broken after verification")
    samples = ds.__getitems__(list(range(MIN_POOL)))
    assert len(samples) == MIN_POOL and ds.skipped >= 1 and 3 not in classes_in(samples)


def test_a_batch_is_handed_on_without_a_copy(traced):
    ds = LoadImagesAndLabels(str(traced), img_size=64, batch_size=4, augment=True, workers=0)
    samples = ds.__getitems__([0, 1, 2, 3])
    images = LoadImagesAndLabels.collate_fn(samples)[0]
    assert images.shape == (4, 3, 64, 64) and images.data_ptr() == samples[0][0].data_ptr()
    assert all(torch.equal(images[k], s[0]) for k, s in enumerate(samples))
    alone = [ds[i] for i in range(4)]  # rows of four different tensors: stacked
    stacked = LoadImagesAndLabels.collate_fn(alone)[0]
    assert all(torch.equal(stacked[k], s[0]) for k, s in enumerate(alone))


def test_workers_give_the_same_batches_with_partners_from_the_batch(traced):
    batches = []
    for workers in (0, 2):
        hyp = {"mosaic": 1.0, "mixup": 1.0, "partner_batches": 1}
        loader, _ = create_dataloader(str(traced), 64, 16, 32, hyp=hyp, augment=True, workers=workers, shuffle=True,
                                      seed=5)
        batches.append(list(loader))
    for (im0, t0, p0, _), (im1, t1, p1, _) in zip(*batches):
        assert p0 == p1 and torch.equal(im0, im1) and torch.equal(t0, t1)
