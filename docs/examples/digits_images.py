"""Write scikit-learn's 1,797 handwritten digits (8x8, bundled with scikit-learn: no download) as PNG files
in one folder per class, the layout `data=image_folder` reads: an image folder to try the data path with.

    python docs/examples/digits_images.py data/digits
"""

import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torchvision.io import write_png


def main(folder: Path) -> None:
    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = torch.from_numpy(image * (255 / 16)).to(torch.uint8).unsqueeze(0)  # (1, 8, 8)
        write_png(pixels, str(folder / str(label) / f"{n:04d}.png"))
    print(f"wrote {len(digits.images)} PNG files in {folder}/0 ... {folder}/9")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/digits"))
