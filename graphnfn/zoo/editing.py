"""Editing targets for INR editing (NFN / NFT style): the image an edited INR should draw.

On images [B, C, H, W] in [0, 1]:

* ``dilate``: 3x3 grey-value dilation (max filter), as NFN's ``cv2.dilate`` with a 3x3 kernel;
* ``erode``: 2x2 erosion (min filter; OpenCV's anchor for an even kernel: the window
  covers the pixel and its upper/left neighbours);
* ``gradient``: morphological gradient with the 2x2 kernel (dilation minus erosion);
* ``contrast``: a linear contrast stretch about each image's mean by ``factor``
  (1.5), clipped to [0, 1]. NFN/NFT use OpenCV's CLAHE on the L channel instead;
  we have no OpenCV dependency, so contrast targets differ from theirs.

Pixels outside the image are ignored (OpenCV's default border for morphology).
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor


def _max_filter(images: Tensor, k: int) -> Tensor:
    # OpenCV anchors a k x k kernel at (k // 2, k // 2): k // 2 pixels before, k - 1 - k // 2 after
    before, after = k // 2, k - 1 - k // 2
    padded = F.pad(images, (before, after, before, after), value=float("-inf"))
    return F.max_pool2d(padded, k, stride=1)


def dilate(images: Tensor, k: int = 3) -> Tensor:
    return _max_filter(images, k)


def erode(images: Tensor, k: int = 2) -> Tensor:
    return -_max_filter(-images, k)


def gradient(images: Tensor, k: int = 2) -> Tensor:
    return dilate(images, k) - erode(images, k)


def contrast(images: Tensor, factor: float = 1.5) -> Tensor:
    mean = images.mean(dim=(-2, -1), keepdim=True)
    return ((images - mean) * factor + mean).clamp(0, 1)


EDITS: dict[str, Callable[[Tensor], Tensor]] = {"dilate": dilate, "erode": erode, "gradient": gradient,
                                                "contrast": contrast}


def edit_images(images: Tensor, name: str) -> Tensor:
    """Apply edit ``name`` to images [B, C, H, W] (or [C, H, W]) in [0, 1]."""
    if name not in EDITS:
        raise ValueError(f"unknown edit {name!r}; expected one of {sorted(EDITS)}")
    if images.dim() == 3:
        return EDITS[name](images[None])[0]
    return EDITS[name](images)
