"""Detectors beside DeDe that score samples from the victim's embeddings, and their rank fusion."""
