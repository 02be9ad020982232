"""On-device augmentation for the small datasets (§4.2), run inside the compiled train step.

The mean image is subtracted first and the padding is zeros, so padded pixels hold the mean
colour; then a random crop of the original size from the padded image and a random flip.
Randomness comes from a key folded with the iteration number, so (seed, step) fixes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean_image: jax.Array) -> jax.Array:
    """uint8 (B, H, W, C) -> float32 mean-subtracted (B, H, W, C), 0..255 scale."""
    return images.astype(jnp.float32) - mean_image


def random_crop_flip(key: jax.Array, images: jax.Array, pad_pixels: int, flip: bool
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pads by `pad_pixels` zeros per side, crops back to (H, W) at random offsets, flips half.

    Args:
      key: PRNG key.  images: float32 (B, H, W, C), already mean-subtracted.
    Returns:
      (augmented images (B, H, W, C), offsets int32 (B, 2) in [0, 2 * pad], flipped bool (B,)).
    """
    batch, height, width, channels = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * pad_pixels + 1)
    padded = jnp.pad(images, ((0, 0), (pad_pixels,) * 2, (pad_pixels,) * 2, (0, 0)))

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))

    cropped = jax.vmap(crop)(padded, offsets)
    flipped = jax.random.bernoulli(flip_key, 0.5, (batch,)) if flip else jnp.zeros(batch, bool)
    out = jnp.where(flipped[:, None, None, None], cropped[:, :, ::-1, :], cropped)
    return out, offsets, flipped
