"""Training itself: the LightningModule (`task`), fitting with resume, the finders and the gradient check."""
