"""Using trained models outside the pipeline: inputs prepared as in training, predictions, export, summaries.

The ``medlens`` command (:mod:`medlens.cli`) is a thin layer over these modules.
"""

from medlens.inference.inputs import (
    Failure,
    ImageInput,
    Preprocessing,
    list_images,
    load_batches,
    model_input,
    resolve_preprocessing,
)

__all__ = [
    "Failure",
    "ImageInput",
    "Preprocessing",
    "list_images",
    "load_batches",
    "model_input",
    "resolve_preprocessing",
]
