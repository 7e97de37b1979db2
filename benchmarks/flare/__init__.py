"""The FLARE profiler: the organisers' harness and sampler, their summary, Table 6, the per-case profile and the GPU check."""
