"""Detectors beside DeDe that score samples from the victim's embeddings, their rank fusion, and their
calibration on the decoder's clean hold-out (`score_corpus --detectors`)."""
