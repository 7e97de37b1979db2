"""Training the project's default model with nnU-Net v2's own planning, preprocessing and trainer.

    python -m training.default_model --work /work/train_tmp --out weights/

Modules: `data` (phantom training / held-out sets as nnU-Net raw datasets), `plans` (narrowing the
planned 3d_fullres network), `trainer` (nnUNetTrainer subclass with a short CPU schedule), `steps`
(the step runner both training recipes use), `default_model` (the whole recipe, CLI; its export step
is `inference.weights import`).
"""
