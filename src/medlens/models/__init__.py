"""Models: contrastive encoders (open_clip), the LAPVQA-style captioner and Hugging Face VLMs.

Submodules import torch; this package file does not, so listing presets stays cheap.
"""

from medlens.models.registry import list_decoder_presets, list_encoder_presets

__all__ = ["list_encoder_presets", "list_decoder_presets"]
