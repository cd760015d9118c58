"""Triton's CPU interpreter (``TRITON_INTERPRET=1``, used by the tests): whether it is on, and the one patch it needs.

Importing this module applies the patch when the interpreter is on.
"""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def patch_scalar_index() -> None:
    """Let Triton's CPU interpreter take run-time loop bounds with NumPy >= 2.4.

    The interpreter holds scalars as one-element arrays and converts them with ``int(array)``, which NumPy 2.4
    turned into an error for arrays that are not 0-d; this re-defines only that conversion, only in the interpreter.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_dyt_bench_patched", False):
        return  # another Triton version: nothing to patch (or already patched)

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._dyt_bench_patched = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    patch_scalar_index()
