"""Synthetic abdominal phantoms with the 13 FLARE organ labels (CT and MRI sequences).

    from phantoms import generate_case, write_dataset
    image, label = generate_case(seed=7, modality="t2", spacing=(2.0, 2.0, 5.0))   # SimpleITK images
    write_dataset("out/Dataset900_Phantoms", n=20, modalities=["ct", "t1", "t2"], seed=0)

CLI: python -m phantoms -o DIR -n N --modality ct|t1|t2|t1c|dwi --seed S [--sequences t1,t2]
"""
from .dataset import plan_cases, subject_seed, write_case, write_dataset, write_dataset_json
from .generate import generate_arrays, generate_case
from .tissues import MODALITIES, MRI_MODALITIES

__all__ = ["generate_case", "generate_arrays", "write_dataset", "write_case", "write_dataset_json",
           "plan_cases", "subject_seed", "MODALITIES", "MRI_MODALITIES"]
