"""Operator argument checks; they live in :mod:`invdiff.validate` (this module re-exports them)."""

from invdiff.validate import check_img_size, check_input, check_noise_std

__all__ = ["check_img_size", "check_input", "check_noise_std"]
