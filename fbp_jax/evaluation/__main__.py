"""`python -m fbp_jax.evaluation evaluate|ensemble|mcnemar ...` (see fbp_jax.evaluation.cli)."""

from absl import app

from fbp_jax.evaluation import cli

if __name__ == "__main__":
    cli.define_flags()
    app.run(cli.main)
