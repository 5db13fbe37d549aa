"""Data: datasets as uint8 tensors (decoded once, cached on disk), the study's splits, augmentation views."""
