"""The model layer: pure kernels (`ops`), Linen modules, encoders, fusion heads and the
model family (`network.get_model`). Imports nothing from training, evaluation or serving, and
no TensorFlow."""
