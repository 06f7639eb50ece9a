"""Shard lists, tolerant tar reading, safe image decoding and tar writing."""
