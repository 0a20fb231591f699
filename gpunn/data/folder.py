"""Image folders for the ImageNet-style convnet demo (KSH 2012), read with Pillow a batch at a time.

The layout is torchvision's::

    root/train/<class>/*.jpg|*.jpeg|*.png
    root/val/<class>/...

Class names are the sorted sub-folder names, numbered from 0. Every image is decoded, made RGB,
resized so its shorter side is ``resize`` pixels, then cut to ``crop`` x ``crop``: the centre
for evaluation, a random place and a coin-flip horizontal mirror for training (KSH's
augmentation). Batches come out as (N, 3, crop, crop) float32, each channel normalised with
``(value / 255 - mean) / std``, and (N,) int64 labels. Randomness comes only from the
``numpy.random.Generator`` passed to :meth:`ImageFolder.load`, so a seed gives the same batches.

:class:`SyntheticImages` has the same interface and makes random images, for throughput runs.
Loading in background threads is :mod:`gpunn.data.prefetch`; a small real folder to train on is
:func:`gpunn.data.toy.make_toy`.

KSH's ten-crop testing reads its crops with :meth:`ImageFolder.load_ten_crops` (the four
corners and the centre, and their mirror images: :func:`ten_crops`); their PCA colour noise is
:mod:`gpunn.data.colour`. What it leaves out: formats other than JPEG and PNG. Files whose
extension is not an image's (``.txt``, ``.DS_Store``) and hidden files are skipped; a file
with an image extension that does not decode is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpunn.errors import ConfigError, DataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "ImageFolder",
           "SyntheticImages", "channel_stats", "open_image_folder", "ten_crops"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Per-channel (R, G, B) mean and standard deviation of ImageNet's training images, on [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYOUT = "root/train/<class>/<image>.jpg and root/val/<class>/<image>.jpg"


def default_resize(crop: int) -> int:
    """The shorter side to resize to before cropping: 256 for 224 crops, 73 for 64 (ratio 8/7)."""
    return round(crop * 8 / 7)


class ImageFolder:
    """One split (``"train"`` or ``"val"``) of an image folder: N image files and their labels.

    ``train`` (default: ``split == "train"``) chooses random crops and flips over centre crops.
    ``mean`` and ``std`` are per-channel (R, G, B) on [0, 1]. Listing the files happens here;
    decoding happens in :meth:`load`, so a corrupt file is found when it is loaded (or by
    :meth:`verify`).
    """

    def __init__(self, root, split: str = "train", crop: int = 64, resize: int | None = None,
                 train: bool | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if split not in ("train", "val"):
            raise ConfigError(f"split should be 'train' or 'val'; received {split!r}")
        resize = default_resize(crop) if resize is None else resize
        if not 1 <= crop <= resize:
            raise ConfigError(f"crop should be 1 to resize={resize} pixels; received crop={crop}")
        self.root, self.split, self.crop, self.resize = Path(root), split, crop, resize
        self.train = split == "train" if train is None else train
        self.mean, self.std = _channels(mean, "mean"), _channels(std, "std")
        if np.any(self.std <= 0):
            raise ConfigError(f"std should be positive in every channel; received {tuple(std)}")
        self.folder = _split_folder(self.root, split)
        self.classes = _list_classes(self.folder)
        paths, labels = [], []
        for label, name in enumerate(self.classes):
            files = _list_images(self.folder / name)
            paths += files
            labels += [label] * len(files)
        self.paths: list[Path] = paths
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"ImageFolder({str(self.folder)!r}, {len(self)} images, "
                f"{len(self.classes)} classes, crop={self.crop}, resize={self.resize}, "
                f"train={self.train})")

    def load(self, indices, rng: np.random.Generator | None = None, uint8: bool = False):
        """Images ``indices`` (ints) as ``(X, y)``: X (n, 3, crop, crop) float32, y (n,) int64.

        Training draws three numbers per image from ``rng`` (crop row, crop column, flip), in
        index order, before decoding anything; ``rng=None`` then means an unseeded generator.
        Evaluation draws nothing. Raises :class:`DataError` naming a file that does not decode.
        ``uint8=True`` gives the same crops as (n, crop, crop, 3) uint8, a quarter of the bytes
        to copy to a GPU, for :meth:`normalise` to finish there.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        draws = None
        if self.train:
            rng = np.random.default_rng() if rng is None else rng
            draws = rng.random((len(indices), 3))
        images = self.load_uint8(indices, draws)
        X = images if uint8 else normalise(images, self.mean, self.std)
        return X, self.labels[indices]

    def normalise(self, images, xp=np):
        """What :meth:`load` does after cropping, on ``xp``'s device: (n, H, W, 3) uint8 ->
        (n, 3, H, W) float32, equal to ``load(...)[0]`` on every backend."""
        return normalise(images, self.mean, self.std, xp)

    def load_uint8(self, indices, draws=None) -> np.ndarray:
        """Images ``indices`` as (n, crop, crop, 3) uint8 RGB, before normalisation.

        ``draws`` (n, 3) in [0, 1) picks each crop's row and column offset as a fraction of the
        room there is, and flips where the third number is below 0.5; None takes centre crops.
        """
        out = np.empty((len(indices), self.crop, self.crop, 3), dtype=np.uint8)
        for row, index in enumerate(indices):
            pixels = self._decode(self.paths[index])
            height, width = pixels.shape[:2]
            if draws is None:
                top, left, flip = (height - self.crop) // 2, (width - self.crop) // 2, False
            else:
                u = draws[row]
                top = min(int(u[0] * (height - self.crop + 1)), height - self.crop)
                left = min(int(u[1] * (width - self.crop + 1)), width - self.crop)
                flip = u[2] < 0.5
            patch = pixels[top:top + self.crop, left:left + self.crop]
            out[row] = patch[:, ::-1] if flip else patch
        return out

    def load_ten_crops(self, indices) -> np.ndarray:
        """KSH's ten test crops of images ``indices``: (10 n, crop, crop, 3) uint8, image
        ``j``'s in rows ``10 j .. 10 j + 9`` in :func:`ten_crops`' order."""
        out = np.empty((10 * len(indices), self.crop, self.crop, 3), dtype=np.uint8)
        for row, index in enumerate(indices):
            out[10 * row:10 * row + 10] = ten_crops(self._decode(self.paths[index]), self.crop)
        return out

    def _decode(self, path: Path) -> np.ndarray:
        """The image at ``path`` as (H, W, 3) uint8 with its shorter side ``self.resize``."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
                scale = self.resize / min(width, height)
                size = (max(self.resize, round(width * scale)),
                        max(self.resize, round(height * scale)))
                # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for a
                # 500 x 375 photo headed for 256, and never below the size asked for.
                image.draft("RGB", size)
                image = image.convert("RGB") if image.mode != "RGB" else image
                if image.size != size:
                    image = image.resize(size, Image.BILINEAR)
                return np.asarray(image)
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: not an image Pillow can read ({exc}); delete or replace "
                            "the file") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise DataError(f"{path}: the image is corrupt or truncated ({exc}); delete or "
                            "replace the file") from exc

    def verify(self, full: bool = False) -> None:
        """Check that every file opens as an image, reading only its header (fast).

        ``full=True`` decodes every image completely, which also finds truncated files.
        Raises one :class:`DataError` listing the bad files (up to ten) and how many there are.
        """
        from PIL import Image, UnidentifiedImageError

        bad = []
        for path in self.paths:
            try:
                with Image.open(path) as image:
                    if full:
                        image.load()
            except (UnidentifiedImageError, Image.DecompressionBombError, OSError,
                    SyntaxError, ValueError) as exc:
                bad.append(f"{path} ({exc})")
        if bad:
            shown = "; ".join(bad[:10]) + ("; ..." if len(bad) > 10 else "")
            what, it = (("is not a readable image", "it") if len(bad) == 1
                        else ("are not readable images", "them"))
            raise DataError(f"{self.folder}: {len(bad)} of {len(self)} files {what}: {shown}; "
                            f"delete or replace {it}")


def open_image_folder(root, crop: int = 64, resize: int | None = None, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD) -> tuple[ImageFolder, ImageFolder]:
    """The ``(train, val)`` splits of the image folder ``root``, with the same classes.

    train takes random crops and flips, val centre crops. Raises :class:`DataError` when a
    split is missing or empty, or when the two splits' class folders differ.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; an image folder holds {_LAYOUT} "
                        "(gpunn.data.make_toy writes a small one)")
    for split in ("train", "val"):
        _split_folder(root, split)  # a missing split is reported before any listing
    train = ImageFolder(root, "train", crop, resize, True, mean, std)
    val = ImageFolder(root, "val", crop, resize, False, mean, std)
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise DataError(f"{root}: train/ and val/ have different classes (missing from val/: "
                        f"{', '.join(only_train) or 'none'}; missing from train/: "
                        f"{', '.join(only_val) or 'none'}); give both the same class folders")
    return train, val


class SyntheticImages:
    """``n`` random images in ``classes`` classes with :class:`ImageFolder`'s interface.

    Image ``i`` is the same on every load (seeded by ``(seed, i)``): standard normal noise plus a
    per-class shift of each channel, so a network can learn a little from it. For measuring
    throughput without a disk or Pillow (``--synthetic``).
    """

    def __init__(self, n: int, classes: int = 1000, crop: int = 224, seed: int = 0):
        if n < 1 or classes < 2 or crop < 1:
            raise ConfigError(f"SyntheticImages needs n >= 1, classes >= 2, crop >= 1; received "
                              f"n={n}, classes={classes}, crop={crop}")
        self.crop, self.seed, self.train = crop, seed, False
        self.classes = tuple(f"class{k}" for k in range(classes))
        self.labels = np.random.default_rng([seed, 0]).integers(0, classes, n, dtype=np.int64)
        self._shift = np.random.default_rng([seed, 1]).standard_normal(
            (classes, 3, 1, 1), dtype=np.float32) * np.float32(0.5)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"SyntheticImages({len(self)} images, {len(self.classes)} classes, "
                f"crop={self.crop})")

    def load(self, indices, rng: np.random.Generator | None = None):
        """Images ``indices`` as ``(X, y)``: X (n, 3, crop, crop) float32, y (n,) int64."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        X = np.empty((len(indices), 3, self.crop, self.crop), dtype=np.float32)
        for row, index in enumerate(indices):
            gen = np.random.default_rng([self.seed, 2, int(index)])
            gen.standard_normal(X.shape[1:], dtype=np.float32, out=X[row])
            X[row] += self._shift[self.labels[index]]
        return X, self.labels[indices]


def ten_crops(pixels: np.ndarray, crop: int) -> np.ndarray:
    """The ten ``crop`` x ``crop`` patches KSH average at test time, (10, crop, crop, C) from
    ``pixels`` (H, W, C): top-left, top-right, bottom-left, bottom-right, centre (as
    evaluation's centre crop), then the same five mirrored left to right."""
    height, width = pixels.shape[:2]
    if not (1 <= crop <= min(height, width)):
        raise ConfigError(f"ten crops of {crop}x{crop} need an image at least that large; "
                          f"received one of {height}x{width}")
    places = ((0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop),
              ((height - crop) // 2, (width - crop) // 2))
    five = np.stack([pixels[top:top + crop, left:left + crop] for top, left in places])
    return np.concatenate([five, five[:, :, ::-1]])


def normalise(images, mean, std, xp=np):
    """(n, H, W, 3) uint8 RGB -> (n, 3, H, W) float32 ``(value / 255 - mean) / std`` per channel,
    on ``xp``'s device (NumPy or CuPy arrays; the same float32 operations, the same numbers)."""
    mean, std = _channels(mean, "mean"), _channels(std, "std")
    out = xp.empty((images.shape[0], 3, *images.shape[1:3]), dtype=np.float32)
    out[...] = images.transpose(0, 3, 1, 2)
    # one multiply and one subtract: (v/255 - m)/s = v * (1/(255 s)) - m/s
    out *= xp.asarray((1 / (255 * std)).astype(np.float32)[:, None, None])
    out -= xp.asarray((mean / std).astype(np.float32)[:, None, None])
    return out


def channel_stats(dataset: ImageFolder, samples: int = 1000, seed: int = 0):
    """Per-channel ``(mean, std)`` on [0, 1] of up to ``samples`` centre-cropped images.

    Drawn at random (``seed``) from ``dataset``; pass them as ``mean=``/``std=`` when a
    dataset's colours are far from ImageNet's.
    """
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.permutation(len(dataset))[:samples])
    pixels = dataset.load_uint8(indices).reshape(-1, 3).astype(np.float64) / 255
    return tuple(pixels.mean(axis=0).tolist()), tuple(pixels.std(axis=0).tolist())


def _channels(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.shape != (3,):
        raise ConfigError(f"{name} should hold 3 numbers (R, G, B); received {values!r}")
    return array


def _split_folder(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; an image folder holds {_LAYOUT} "
                        "(gpunn.data.make_toy writes a small one)")
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; an image folder holds {_LAYOUT}, so create "
                        f"{split}/ with one sub-folder of images per class")
    return folder


def _list_classes(folder: Path) -> tuple[str, ...]:
    classes = tuple(sorted(p.name for p in folder.iterdir()
                           if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DataError(f"{folder}: no class folders inside; put each class's images in "
                        f"{folder}/<class name>/")
    if len(classes) == 1:
        raise DataError(f"{folder}: only one class folder ({classes[0]}); classification "
                        "needs at least two, one per class")
    return classes


def _list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this class "
                        "folder; add some or remove the folder")
    return files
