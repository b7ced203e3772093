"""Training support for ``training/train.py``: data sets of pseudo-labelled pairs, batches, the loss, EWC and
replay, pickle-free checkpoints, logs and the model card."""
