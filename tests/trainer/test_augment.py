import torch
from torchvision.transforms.v2 import functional as TF

from trainer.augment import BatchAugment, grey, shift_hue


def test_hue_shift_matches_torchvision():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    shifts = torch.tensor([-0.4, -0.1, 0.2, 0.4])
    ours = shift_hue(x, shifts)
    theirs = torch.stack([TF.adjust_hue(x[i], float(shifts[i])) for i in range(4)])
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_grey_matches_torchvision():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(grey(x), TF.rgb_to_grayscale(x), atol=1e-6)


def _aug(**kw):
    return BatchAugment(16, torch.zeros(3), torch.ones(3), **kw)


def test_identity_when_every_augmentation_is_off():
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    out = _aug(crop_scale_min=1.0, jitter=0.0, grayscale_p=0.0, ratio=(1.0, 1.0))(
        images, torch.Generator().manual_seed(0))
    assert torch.allclose(out, images.float() / 255, atol=1e-5)


def test_augmentation_is_reproducible_from_the_generator_and_varies_per_image():
    images = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(8, -1, -1, -1)
    a = _aug()(images, torch.Generator().manual_seed(1))
    b = _aug()(images, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.shape == (8, 3, 16, 16) and torch.isfinite(a).all()
    assert not torch.allclose(a[0], a[1])  # each image draws its own crop and jitter


def test_grayscale_probability_one_gives_grey_images():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = _aug(jitter=0.0, grayscale_p=1.0)(images, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
