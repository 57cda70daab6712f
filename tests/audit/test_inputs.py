"""The audit's inputs: --images DIR and --model values (no pytest plugin involved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maskbench.audit import images as audit_images
from maskbench.audit import targets


def write_images(directory, count, size=(40, 60)):
    rng = np.random.default_rng(0)
    for i in range(count):
        array = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(directory / f"img{i}.png")
    (directory / "notes.txt").write_text("not an image")


def test_images_from_a_directory_are_resized_and_centre_cropped(tmp_path):
    write_images(tmp_path, 3)
    bank = audit_images.audit_images(tmp_path, 32, batch_size=2)
    assert bank.shape == (3, 3, 32, 32) and bank.dtype == torch.float32
    assert float(bank.min()) >= 0.0 and float(bank.max()) <= 1.0


def test_image_directories_with_too_few_or_no_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no image files"):
        audit_images.image_files(tmp_path)
    write_images(tmp_path, 1)
    with pytest.raises(ValueError, match="holds 1 images but --batch-size is 2"):
        audit_images.audit_images(tmp_path, 32, batch_size=2)
    with pytest.raises(ValueError, match="not a directory"):
        audit_images.image_files(tmp_path / "missing")


def test_default_bank_is_the_bundled_photographs():
    assert audit_images.audit_images(None, 32, batch_size=2).shape == (4, 3, 32, 32)
    assert audit_images.audit_images(None, 32, batch_size=6).shape[0] == 6


def test_model_values_are_split_deduplicated_and_resolved():
    found, notes = targets.resolve_models(["resnet18, resnet18", "resnet1?"])
    names = [t.name for t in found]
    assert names[0] == "resnet18" and len(names) == len(set(names))
    assert notes and "matches" in notes[0]


def test_plain_modules_from_factories_are_wrapped_and_said_so(tmp_path, monkeypatch):
    (tmp_path / "userfactory.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),"
        " torch.nn.Flatten(), torch.nn.Linear(4, 5))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (target,), _ = targets.resolve_models(["userfactory:make"])
    built = targets.build_model(target, "auto", torch.device("cpu"))
    assert built.info["weights"] == "user" and "ImageNet mean/std" in built.info["note"]
    assert not built.model.training
    assert built.model(torch.rand(1, 3, 16, 16)).shape == (1, 5)
