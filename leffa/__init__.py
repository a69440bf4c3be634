"""leffa: controllable person image generation (virtual try-on, pose transfer) with Leffa attention flow."""

__version__ = "0.1.0"
