"""Facts about FLARE 2024 Task 3 shared by every part of the project (one source of truth)."""
