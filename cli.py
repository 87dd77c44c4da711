"""Run deblur from a checkout: ``python cli.py restore ...``.

The installed command is ``deblur`` (``deblur.cli:app``); this launcher only
exists so that no module named ``cli`` goes into site-packages.
"""

from deblur.cli import app

if __name__ == "__main__":
    app()
