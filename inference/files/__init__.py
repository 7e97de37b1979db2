"""File input and output: case discovery, NIfTI content sniffing and header checks, reading cases with
SimpleITK, writing label maps, and atomic writes for every tool of the repository."""
