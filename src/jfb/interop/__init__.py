"""Interoperability with other imaging libraries. Importing it needs none of them: each adapter
imports its library on first use (see docs/DEEPINV.md for deepinv)."""

from jfb.interop.deepinv import (
    DEEPINV_PADDING,
    DeepinvOperator,
    blur_to_deepinv,
    from_deepinv,
    to_deepinv,
)

__all__ = ["DEEPINV_PADDING", "DeepinvOperator", "blur_to_deepinv", "from_deepinv", "to_deepinv"]
