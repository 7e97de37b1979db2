"""nnU-Net's rules that both engines follow, in plain Python and numpy (no torch, no OpenVINO): the grid a
spacing change gives, tile positions and Gaussian weights, the normalisation schemes, the preprocessed
record. Imports nothing else of this package but `inference.InferenceError`."""
