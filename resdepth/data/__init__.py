"""Datasets through TensorFlow Datasets: CIFAR-10, the embedded digits, ImageNet input and multi-crop testing, augmentation."""
