"""What a case costs in memory and what the process may use: the host cost model checked before a case
is read (`cost`), the CUDA device plan (`gpu_plan`, arithmetic) and its run-time budget (`gpu_budget`)."""
