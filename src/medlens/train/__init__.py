"""Training: the contrastive encoder loop (accelerate) and the decoders (Hugging Face Trainer)."""
