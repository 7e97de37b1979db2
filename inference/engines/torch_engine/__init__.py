"""The torch engine: preprocessing, sliding window and export as torch tensors on the compute device
(CUDA, or the CPU with `--backend torch`), with out-of-memory fall-backs on CUDA."""
