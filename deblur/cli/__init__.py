"""The command line: options in, library calls, results out.

Each command lives in its own module and registers itself on ``app`` when
imported; ``deblur --help`` lists them in this order.
"""

from . import (
    bench,  # noqa: E402,F401
    blur,  # noqa: E402,F401
    compare,  # noqa: E402,F401
    fit,  # noqa: E402,F401
    kernel,  # noqa: E402,F401
    restore,  # noqa: E402,F401,I001  (registration order is help order)
)
from ._app import app

__all__ = ["app"]
