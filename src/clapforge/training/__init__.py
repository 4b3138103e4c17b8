"""Contrastive training with Accelerate: recipes, the distributed loss, checkpoints, `train(recipe)`."""
