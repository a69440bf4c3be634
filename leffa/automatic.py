"""Automatic conditions for ``leffa tryon`` / ``leffa pose`` from a plain photo, published as ``leffa.conditions``.

The garment-agnostic mask comes from human parsing + OpenPose (``leffa.preprocess``), the DensePose image from the
DensePose R-CNN rebuilt on plain torch (``leffa.densepose``). Models are loaded once per process and reused.
"""

from __future__ import annotations

from functools import lru_cache

from PIL import Image

# What each pipeline kind means in the DensePose renderings the released models were trained with.
DENSEPOSE_KIND = {"rgb": "seg", "index": "index", "iuv": "iuv"}


@lru_cache(maxsize=2)
def _prep_tools(offline: bool):
    from leffa.preprocess.conditions import PrepTools

    return PrepTools.load(offline=offline)


def garment_mask(
    person: Image.Image, garment_type: str, offline: bool = False, mask_style: str = "upstream", style: str = "hd"
) -> Image.Image:
    """Garment-agnostic mask (L, photo size, 255 = regenerate) for ``garment_type`` and the ``style`` model (``hd``
    VITON-HD, ``dc`` DressCode); ``mask_style`` ``upstream`` (the authors' rules, default) or ``tight``."""
    from leffa.hub import MissingWeights
    from leffa.preprocess.conditions import automatic_conditions

    try:
        tools = _prep_tools(offline)
    except MissingWeights as error:
        raise error.or_else("give the mask yourself with --mask FILE (`leffa prep mask` makes one)") from None
    return automatic_conditions(person, garment_type, style=style, tools=tools, mask_style=mask_style)


def densepose(person: Image.Image, kind: str, offline: bool = False) -> Image.Image:
    """DensePose condition: the part rendering (``rgb``, VITON-HD try-on), the part indices (``index``, DressCode
    try-on) or the IUV image (``iuv``, pose transfer)."""
    from leffa.densepose import densepose_image
    from leffa.hub import MissingWeights

    try:
        return densepose_image(person, DENSEPOSE_KIND[kind], offline=offline)
    except MissingWeights as error:
        made_by = f"`leffa prep densepose --kind {DENSEPOSE_KIND[kind]}`"
        raise error.or_else(f"give it yourself with --densepose FILE ({made_by} makes one)") from None
