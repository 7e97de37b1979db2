"""FLARE 2024 Task 3 accuracy metrics (DSC and NSD per organ), as the official scorer computes them.

    from evaluation import score_case, score_folder
    score_case("pred/amos_0540.nii.gz", "gt/amos_0540.nii.gz")   # {"Liver_DSC": 0.97, ..., "LK_NSD": ...}
    result = score_folder("pred/", "gt/")                           # rows, missing, errors

CLI: python -m evaluation -p PRED_DIR -g GT_DIR -o OUT_DIR   (writes OUT_DIR/scores.csv)
"""
from .folder import FolderResult, score_case, score_folder, write_csv, zero_scores
from .masks import LabelMap, MaskError, read_label_map
from .report import format_table, summarise

__all__ = ["score_case", "score_folder", "write_csv", "zero_scores", "FolderResult", "LabelMap",
           "MaskError", "read_label_map", "format_table", "summarise"]
