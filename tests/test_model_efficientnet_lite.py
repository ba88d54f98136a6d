"""EfficientNet-Lite0's real ImageNet weights: the classifier names real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgevpr.core.preprocess import preprocess
from edgevpr.model.config import default_preprocess
from edgevpr.model.efficientnet_lite import efficientnet_lite0_classifier

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the test photos")

EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return efficientnet_lite0_classifier(pretrained=True)


def top5(classifier: torch.nn.Module, image: np.ndarray) -> list[int]:
    batch = torch.from_numpy(
        preprocess([image], default_preprocess("efficientnet_lite0", 224, 224))
    )
    with torch.no_grad():
        return classifier(batch).topk(5).indices[0].tolist()


def test_chelsea_is_a_cat(classifier: torch.nn.Module) -> None:
    assert top5(classifier, skimage_data.chelsea())[0] in {EGYPTIAN_CAT, TABBY, TIGER_CAT}


def test_coffee_is_an_espresso(classifier: torch.nn.Module) -> None:
    assert top5(classifier, skimage_data.coffee())[0] == ESPRESSO


def test_untrained_network_does_not_name_them(classifier: torch.nn.Module) -> None:
    """The check above could fail: a randomly initialised network misses both."""
    torch.manual_seed(0)
    random_net = efficientnet_lite0_classifier(pretrained=False)
    hits = [
        top5(random_net, skimage_data.chelsea())[0] in {EGYPTIAN_CAT, TABBY, TIGER_CAT},
        top5(random_net, skimage_data.coffee())[0] == ESPRESSO,
    ]
    assert not all(hits)
