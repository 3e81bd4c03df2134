"""Demo on the embedded synthetic corpus (`fbp_jax.base_config.demo_config`: AFEW-like sizes,
7 classes, 200-bin spectrograms, 1024-d face features), sized for 2 CPU cores.

    fbp-jax demo                                  # builds the corpus, trains 4 variants, table
    python train.py --config=configs/demo.py:am_fbp --config.data.data_dir=data
"""

from fbp_jax import base_config


def get_config(fusion: str = "am_fbp"):
    return base_config.demo_config(fusion)
