"""Write the sharp sample photographs from scikit-image's bundled data.

All four are free of copyright restrictions (see LICENSE.md beside this file).
Run by ``make samples``; the blurred copies are then made with ``deblur blur``.
"""

from pathlib import Path

from PIL import Image
from skimage import data

PHOTOS = {
    "camera": data.camera,  # 512 x 512 gray, CC0 (Lav Varshney)
    "astronaut": data.astronaut,  # 512 x 512 RGB, public domain (NASA)
    "coffee": data.coffee,  # 400 x 600 RGB, CC0 (Rachel Michetti)
    "chelsea": data.chelsea,  # 300 x 451 RGB, CC0 (Stefan van der Walt)
}


def main() -> None:
    out = Path(__file__).parent / "sharp"
    out.mkdir(exist_ok=True)
    for name, load in PHOTOS.items():
        Image.fromarray(load()).save(out / f"{name}.png", optimize=True)


if __name__ == "__main__":
    main()
