"""Trained runs tested again: layer responses (Figure 7) and ImageNet 10-crop and multi-scale testing."""
