"""Backbone architectures the encoder adapters build."""
