"""The command line: options in, library calls, results out.

Each command lives in its own module and registers itself on ``app``.
"""

from ._app import app

# one import per command module; each registers its commands on ``app``
from . import restore  # noqa: E402,F401
from . import blur  # noqa: E402,F401
from . import kernel  # noqa: E402,F401
from . import compare  # noqa: E402,F401
from . import bench  # noqa: E402,F401
from . import fit  # noqa: E402,F401

__all__ = ["app"]
