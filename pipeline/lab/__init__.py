"""The backdoor factory: clean encoders, triggers, attacks and poisoned corpora for CIFAR-10 scale."""
