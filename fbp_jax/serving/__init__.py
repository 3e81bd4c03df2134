"""Serving: a trained model (workdir or `jax.export` bundle) on media files; no TensorFlow."""
