"""The two engines that run a case's array work, and the one place that chooses between them.

- `numpy_engine`: the default on the CPU; numpy for preprocessing and export, OpenVINO for the network;
  never imports torch.
- `torch_engine`: CUDA, or `--backend torch` on the CPU; torch tensors on the compute device, with the
  out-of-memory fall-backs and the GPU memory budget.
Both implement `inference.engines.base.Engine`; `inference.engines.choice` decides which one a model
load gets, and the loaded model carries it.
"""
