"""Stripped single-image nnU-Net v2 predictor (FLARE 2024 Task 3 container).

Kept import-light on purpose: FLARE counts Python import time in the running time. Import the
submodules you need (`inference.api`, `inference.loading`, ...) rather than everything here.
"""

class InferenceError(Exception):
    """A problem with one input, a model folder or an output location, worded for people."""
