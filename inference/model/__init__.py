"""A standard nnU-Net v2 trained-model folder: reading it (dataset.json, plans.json, checkpoints), its
manifest of checksums, and loading it into a `LoadedModel` with its engine and networks."""
