"""Processors for image+text chat models that work without torchvision.

transformers' ``Qwen2_5_VLProcessor`` insists on a video processor, and video processors need
torchvision, which CPU machines here do not have. Image-only work (everything forgetless does)
needs only the image processor and the tokenizer, so ``ImageQwen2_5_VLProcessor`` is the
official processor with the video part left out: same image-token expansion, same outputs.

    processor = ImageQwen2_5_VLProcessor(image_processor, tokenizer, chat_template=template)
    batch = processor(text=[prompt], images=[image], return_tensors="pt")
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin


class ImageQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only (no video processor, no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)
