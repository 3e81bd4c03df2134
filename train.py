"""Trains one AM-FBP family model (the same as `fbp-jax train`; see fbp_jax/training/cli.py).

    python train.py --config=configs/afew_amfbp.py [--workdir=workdirs/afew_amfbp]
    python train.py --config=configs/demo.py:g_fbp

Any config field can be overridden: --config.optim.learning_rate=3e-4.
"""

from absl import app

from fbp_jax.training import cli

if __name__ == "__main__":
    cli.define_flags()
    app.run(cli.main)
