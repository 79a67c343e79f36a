"""Trainer plugins: how checkpoints reach the disk."""
