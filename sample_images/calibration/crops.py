"""Write the sharp half of the calibration set: crops of scikit-image's photos.

Each crop is 192 x 192 pixels, stored as 8-bit PNG in ``sharp/`` beside this
file.  ``make samples`` then writes the kernel ``true_kernel.npy`` with
``deblur kernel make`` and the blurred half, ``blurred/``, with ``deblur blur``,
so that ``deblur fit-kernel blurred sharp --size 5`` has pairs whose answer is
known.  The photographs are free of copyright restrictions (see
``../LICENSE.md``).
"""

from pathlib import Path

from PIL import Image
from skimage import data

SIZE = 192

#: name: (loader, top row, left column, licence as scikit-image documents it)
CROPS = {
    "camera": (data.camera, 40, 170, "CC0, Lav Varshney"),  # gray
    "astronaut": (data.astronaut, 20, 150, "public domain, NASA"),
    "coffee": (data.coffee, 90, 190, "CC0, Rachel Michetti"),
    "chelsea": (data.chelsea, 60, 130, "CC0, Stefan van der Walt"),
    "rocket": (data.rocket, 220, 140, "public domain, SpaceX"),
    "immunohistochemistry": (
        data.immunohistochemistry,
        160,
        160,
        "no known copyright restrictions, CMMI",
    ),
}


def main() -> None:
    out = Path(__file__).parent / "sharp"
    out.mkdir(exist_ok=True)
    for name, (load, top, left, _) in CROPS.items():
        crop = load()[top : top + SIZE, left : left + SIZE]
        Image.fromarray(crop).save(out / f"{name}.png", optimize=True)


if __name__ == "__main__":
    main()
