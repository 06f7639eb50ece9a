"""The score_corpus Ray Data job: shard list -> scoring actors -> per-shard outputs -> run.json."""
