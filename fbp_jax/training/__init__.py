"""Training: the pure step functions (`steps`) and the loop (`loop.train_and_evaluate`)."""
