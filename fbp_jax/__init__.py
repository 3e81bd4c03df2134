"""fbp_jax: audio-visual emotion recognition with adaptive and multi-level factorized bilinear
pooling (AM-FBP) in JAX/Flax.

Layers, each importing only those above it:

* `fbp_jax.model`: the paper's kernels (`ops`), modules and the model family; no TensorFlow.
* `fbp_jax.parallel`, `fbp_jax.io`, `fbp_jax.metrics`, `fbp_jax.workdir`: devices, files,
  metrics and what a run writes to disk.
* `fbp_jax.input_pipeline`: tf.data over the TFDS records of `data_prep`.
* `fbp_jax.training`: step functions and the training loop.
* `fbp_jax.evaluation`: metrics of a run, cross-validation, floors, ensembles, figures.
* `fbp_jax.serving`: prediction on media files and `jax.export` bundles; no TensorFlow.
* `fbp_jax.tools`: the demo, the benchmark and the `fbp-jax` command line.
"""
