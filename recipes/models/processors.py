"""Processors for image+text chat models that work without torchvision.

transformers' ``Qwen2_5_VLProcessor`` insists on a video processor, and video processors need
torchvision, which CPU machines here do not have. Image-only work (everything forgetless does)
needs only the image processor and the tokenizer, so ``ImageQwen2_5_VLProcessor`` is the
official processor with the video part left out: same image-token expansion, same outputs.

    processor = ImageQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=template)
    batch = processor(text=[prompt], images=[image], return_tensors="pt")
    set_pixel_bounds(processor, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor
from transformers.image_utils import SizeDict
from transformers.processing_utils import ProcessorMixin


class ImageQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only (no video processor, no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


def set_pixel_bounds(processor, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Bound the pixels Qwen2.5-VL resizes each image to (its image processor's ``size``, in place).

    An image is scaled, keeping its aspect ratio, to between ``min_pixels`` and ``max_pixels``
    pixels (in multiples of 28 x 28, one image token each); None keeps the processor's bound.
    LLaVA-1.5 resizes and crops every image to 336 x 336, so bounds are refused there.
    """
    if min_pixels is None and max_pixels is None:
        return
    image_processor = processor.image_processor
    size = getattr(image_processor, "size", None)
    if getattr(size, "shortest_edge", None) is None or getattr(size, "longest_edge", None) is None:
        raise ValueError(
            f"min_pixels/max_pixels apply to Qwen2.5-VL's processor only; {type(processor).__name__} "
            "resizes images to a fixed size"
        )
    bounds = {
        "shortest_edge": size.shortest_edge if min_pixels is None else min_pixels,
        "longest_edge": size.longest_edge if max_pixels is None else max_pixels,
    }
    if bounds["shortest_edge"] > bounds["longest_edge"]:
        raise ValueError(f"min_pixels {bounds['shortest_edge']} must be <= max_pixels {bounds['longest_edge']}")
    image_processor.size = SizeDict(**bounds)
