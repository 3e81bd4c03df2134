"""Dataset builders (TFDS) and feature extraction, one module per corpus.

Every corpus is written by a TFDS builder in the common schema of the project (see
``data_prep.builders.synthetic`` for the field list). Build one from the command line with
``python -m data_prep.build NAME/CONFIG --data_dir=DIR``. Importing a builder's module registers
it with TFDS, so ``tfds.builder('synthetic_av/afew', data_dir=DIR)`` works after
``import data_prep.builders.synthetic``.
"""
