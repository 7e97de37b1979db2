"""Synthetic abdominal phantoms with the 13 FLARE organ labels (CT and MRI sequences)."""
from .generate import generate_arrays, generate_case
from .tissues import MODALITIES, MRI_MODALITIES

__all__ = ["generate_case", "generate_arrays", "MODALITIES", "MRI_MODALITIES"]
