"""`python -m fbp_jax COMMAND ...`: the same as the `fbp-jax` command."""

from fbp_jax.tools import cli

if __name__ == "__main__":
    cli.run()
