"""The command line: options in, library calls, results out.

Each command lives in its own module and registers itself on ``app`` when
imported; ``deblur --help`` lists them in this order.
"""

from ._app import app

from . import restore  # noqa: E402,F401,I001  (registration order is help order)
from . import fit  # noqa: E402,F401
from . import compare  # noqa: E402,F401
from . import blur  # noqa: E402,F401
from . import kernel  # noqa: E402,F401
from . import bench  # noqa: E402,F401

__all__ = ["app"]
