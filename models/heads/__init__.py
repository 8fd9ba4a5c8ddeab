"""Detection heads, each on the head contract of models/heads/base.py (one file per head family), and
the table of their decoders, by the name an exported file's metadata gives."""
from __future__ import annotations

import json

from models.heads.base import BoxDecoder, DetectionHead
from models.heads.tood import TOODHead
from models.heads.yolox import DetectX, YOLOXDecoder, YOLOXHead
from models.heads.zero import GFLDecoder, ZeroHead

DECODERS: dict[str, type[BoxDecoder]] = {YOLOXDecoder.name: YOLOXDecoder, GFLDecoder.name: GFLDecoder}
DEFAULT_DECODER = YOLOXDecoder.name  # files exported before decoders were named hold YOLOX outputs

__all__ = ["BoxDecoder", "DetectionHead", "DetectX", "YOLOXHead", "TOODHead", "ZeroHead", "DECODERS", "decoder_metadata", "decoder_from_meta"]


def decoder_metadata(decoder: BoxDecoder) -> dict:
    """The metadata entries that let decoder_from_meta rebuild ``decoder`` from an exported file."""
    return {"decoder": decoder.name, "decoder_params": decoder.params()}


def decoder_from_meta(meta: dict) -> BoxDecoder:
    """The decoder an exported file's metadata names (strings; params as JSON)."""
    name = meta.get("decoder", DEFAULT_DECODER)
    if name not in DECODERS:
        raise ValueError(f"the file's outputs need the decoder {name!r}, which this version does not have "
                         f"(known: {', '.join(sorted(DECODERS))})")
    params = meta.get("decoder_params") or {}
    return DECODERS[name](**(json.loads(params) if isinstance(params, str) else params))
