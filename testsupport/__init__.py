"""Test support: fixtures shared by tests/ and benchmarks/, never imported by the predictor.

- `testsupport.model_folder`: standard nnU-Net v2 trained-model folders with random weights (presets
  from a tiny test network to the paper's 30.7 M-parameter architecture); also a command,
  `python -m testsupport.model_folder OUT --preset tiny`.
- `testsupport.nnunet_reference`: synthetic test volumes and nnU-Net's own predictor run on a model
  folder, the reference the equivalence tests compare against.
"""
