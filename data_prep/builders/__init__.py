"""TFDS builders of every corpus on the extraction machinery of `corpus` and `base`."""
