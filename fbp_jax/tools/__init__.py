"""The demo, the benchmark and the `fbp-jax` command line."""
