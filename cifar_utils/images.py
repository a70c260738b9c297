"""Turn any picture into the 32 x 32 RGB uint8 array the models take.

    x = images.load_image("cat.jpg")             # (32, 32, 3) uint8
    batch = images.load_images(["a.png", photo_bytes, pil_image, array])

`load_image` takes a file path, the file's bytes, a file object, a PIL image or a numpy
array of any size and colour mode, and prepares it exactly as the training images were:
converted to 8-bit RGB (transparent parts become white, 16-bit and float images are
stretched to 0-255), centre-cropped to a square and resized to 32 x 32 with an
antialiasing filter. The models take these raw pixels 0-255 and normalise inside (see
`data.normalization_layer`). A 32 x 32 x 3 uint8 array, such as `x_test[i]`, passes
through unchanged.

Pictures come from users, so decoding is hardened: images above `MAX_PIXELS` are refused
before decoding, large ones are shrunk while they are decoded (bounded memory), and every
way a file can be wrong (missing, empty, truncated, not an image, a crafted header, an
array of the wrong shape or range) raises one `ImageError` saying why.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar_utils import files

IMAGE_SIZE = 32
# The largest image we decode, in pixels: PIL's decompression-bomb threshold (about
# 89 megapixels, a 9,459 x 9,459 scan). PIL only warns above it; we refuse instead.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# Large decoded images are first shrunk (box filter, by a whole factor) to no less than
# this many times the output side, then resized with Lanczos: quality is unchanged.
REDUCE_TO_AT_LEAST = 8
RESAMPLE = Image.Resampling.LANCZOS  # antialiasing: a photo shrunk 100x keeps its shapes
# The picture formats a learner uploads; anything else (EPS, which runs Ghostscript, PSD,
# ICNS, ...) is refused before a decoder sees it.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
# Modes whose pixels are stretched from their own range to 0-255 (16/32-bit, float).
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


class ImageError(ValueError):
    """An input that cannot be turned into an image, with the reason."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparent parts become white."""
    try:  # phone photos: honour the orientation tag
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" notes
            image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - broken EXIF (any format): keep the picture as stored
        pass
    if image.mode in WIDE_MODES:
        # 16/32-bit and float greyscale: stretch the image's own range to 0-255;
        # PIL's convert("L") would clip everything above 255 to white.
        return _stretched(image, *_value_range(image)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_to_uint8(arr: np.ndarray, low=None, high=None) -> np.ndarray:
    """`arr` from `low`-`high` (its own range unless given) to 0-255."""
    low = float(np.nanmin(arr)) if low is None else low
    high = float(np.nanmax(arr)) if high is None else high
    if high <= low:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - low) * (255.0 / (high - low))).astype(np.uint8)


def _value_range(image: Image.Image, rows: int = 256):
    """The lowest and highest value of a wide-mode image, read a band of rows at a time."""
    low, high = np.inf, -np.inf
    for top in range(0, image.height, rows):
        band = np.asarray(image.crop((0, top, image.width, min(top + rows, image.height))))
        band = band.astype(np.float64)
        low, high = min(low, float(np.nanmin(band))), max(high, float(np.nanmax(band)))
    return low, high


def _stretched(image: Image.Image, low: float, high: float) -> Image.Image:
    """A wide-mode image (or band of one) as 8-bit greyscale, `low`-`high` to 0-255."""
    return Image.fromarray(_stretch_to_uint8(np.asarray(image, dtype=np.float64), low, high))


def _square_and_resize(image: Image.Image, size: int, crop: bool) -> Image.Image:
    if crop and image.width != image.height:
        image = ImageOps.fit(image, (min(image.size),) * 2, method=Image.Resampling.NEAREST)
    if image.size != (size, size):
        # reducing_gap: shrink by whole factors first (fast on very large images),
        # then Lanczos for the last step (sharp and alias-free).
        image = image.resize((size, size), RESAMPLE, reducing_gap=3.0)
    return image


def _check_pixels(image: Image.Image) -> None:
    pixels = image.width * image.height
    if pixels > MAX_PIXELS:
        raise ImageError(
            f"the image is {image.width} x {image.height} = {pixels:,} pixels, above the "
            f"limit of {MAX_PIXELS:,}; shrink it first"
        )


def _reduce_in_strips(image: Image.Image, factor: int, rows: int = 16) -> Image.Image:
    """`image.reduce(factor)`, a band of `rows * factor` lines at a time.

    Pillow's `reduce` makes a full-size working copy of an RGBA image (it premultiplies
    the alpha first): 350 MB more for a 9,400 x 9,400 picture. Band by band, the extra
    memory is one band's worth; the result is the same as one `reduce`.
    """
    width, height = image.size
    band = rows * factor
    reducible = _reducible(image)
    parts = [
        reducible(image.crop((0, top, width, min(top + band, height)))).reduce(factor)
        for top in range(0, height, band)
    ]
    out = Image.new(parts[0].mode, (parts[0].width, sum(p.height for p in parts)))
    top = 0
    for part in parts:
        out.paste(part, (0, top))
        top += part.height
    return out


def _reducible(image: Image.Image):
    """A function that turns a band of `image` into a mode Pillow's `reduce` takes.

    `reduce` has no palette, 1-bit or 16-bit modes: a full-size conversion of a 9,400 x
    9,400 picture cost up to 2.4 GB (a float64 copy of 16-bit greyscale). Band by band the
    cost is one band's; the colours are the same as converting first.
    """
    if image.mode in WIDE_MODES:
        low, high = _value_range(image)  # the whole image's range, so bands agree
        return lambda band: _stretched(band, low, high)
    if image.mode == "P":
        target = "RGBA" if "transparency" in image.info else "RGB"
        return lambda band: band.convert(target)
    if image.mode == "1":
        return lambda band: band.convert("L")
    return lambda band: band


def _open_file(path: Path):
    """A picture file opened for reading; a FIFO or device in its place never blocks."""
    try:
        handle = files.open_regular(path)
    except FileNotFoundError:
        raise ImageError(f"no such file: {path}") from None
    except files.NotRegularFileError as err:
        raise ImageError(f"{err}: not an image file") from None
    except OSError as err:  # a name too long, no permission, a symlink loop...
        raise ImageError(f"cannot read the file: {err.strerror}") from None
    if os.fstat(handle.fileno()).st_size == 0:
        handle.close()
        raise ImageError(f"{path} is empty (0 bytes): not an image")
    return handle


def _open(source) -> Image.Image:
    """A decoded PIL image from a path, bytes or a file object."""
    handle = None  # a file this function opened, closed once the image is decoded
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("the data is empty (0 bytes): not an image")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        source = handle = _open_file(Path(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source, formats=FORMATS)  # no other decoder is ever run
            _check_pixels(image)  # before decoding: the header already tells the size
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: big photos load fast.
            image.draft(image.mode, (IMAGE_SIZE * 4, IMAGE_SIZE * 4))
            image.load()
        # Formats without draft decoding (PNG, WebP, TIFF...) arrive at full size: shrink by a
        # whole factor at once, so the mode conversions and the crop below work on a small
        # copy. A 9,400 x 9,400 RGBA PNG otherwise took 2 GB to classify; now about its
        # decoded size (350 MB), freed as soon as this function returns.
        factor = min(image.size) // (IMAGE_SIZE * REDUCE_TO_AT_LEAST)
        if factor >= 2:
            try:
                image = _reduce_in_strips(image, factor)
            except (ValueError, NotImplementedError):  # a mode reduce() lacks even so: keep it
                pass
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            "not an image in an accepted format (PNG, JPEG, GIF, BMP, WebP or TIFF)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"the image is too large to decode safely: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"the image file is damaged or truncated: {err}") from None
    except Exception as err:  # NotImplementedError, TypeError... from a crafted or fuzzed file
        raise ImageError(
            f"the image file could not be decoded ({type(err).__name__}: {err})"
        ) from None
    finally:
        if handle is not None:
            handle.close()
    return image


def _array_to_uint8(arr: np.ndarray) -> np.ndarray:
    """One image array (H, W), (H, W, 1|3|4) of any numeric dtype to uint8 (H, W, 3)."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(
            f"an image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"received {arr.shape}"
        )
    if min(arr.shape[:2]) == 0:
        raise ImageError(f"the image array is empty: shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = np.round(arr / 257.0).astype(np.uint8)  # 65535 -> 255
    elif np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer):
        if arr.dtype != np.uint8:
            if not np.all(np.isfinite(arr)):
                raise ImageError("the image array contains NaN or infinite values")
            low, high = float(arr.min()), float(arr.max())
            if low < 0 or high > 255:
                raise ImageError(
                    f"pixel values must lie in 0-255 (raw pixels, as in x_train); received "
                    f"values from {low:g} to {high:g}. Undo any normalisation first."
                )
            if np.issubdtype(arr.dtype, np.floating) and 0 < high <= 1.0:
                warnings.warn(
                    "the image array's values are all within 0-1; the models expect raw pixels "
                    "0-255 (multiply by 255 if you divided by 255)",
                    stacklevel=4,
                )
            arr = np.round(arr).astype(np.uint8)
    else:
        raise ImageError(f"cannot use an image array of dtype {arr.dtype}; use uint8 pixels")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.shape[-1] == 4:
        rgba = Image.fromarray(np.ascontiguousarray(arr), "RGBA")
        arr = np.asarray(_to_rgb(rgba))
    return arr


def load_image(source, size=IMAGE_SIZE, crop=True) -> np.ndarray:
    """One image from anything, prepared exactly as the training images were.

    Args:
        source: a file path, the file's bytes, a file object, a PIL image or a
            numpy array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4). Arrays hold
            raw pixels: uint8, uint16 (scaled by 1/257), or any other numeric
            type with values in 0-255.
        size: the side of the output square. Defaults to 32, CIFAR-10's size.
        crop: centre-crop non-square images to a square before resizing, so
            objects keep their shape. Defaults to True; False squashes the
            whole picture into the square instead.

    Returns:
        A uint8 array of shape `(size, size, 3)`.

    Raises:
        ImageError: (a ValueError) when the input is not a readable image; the
            message says why (missing, empty, truncated, not an image, too
            large, wrong array shape or range).
    """
    if isinstance(source, np.ndarray):
        arr = _array_to_uint8(source)
        if arr.shape[:2] == (size, size):
            return arr
        image = Image.fromarray(arr, "RGB")
        _check_pixels(image)
    elif isinstance(source, Image.Image):
        _check_pixels(source)
        image = source
    else:
        image = _open(source)
    try:
        image = _square_and_resize(_to_rgb(image), size, crop)
        return np.asarray(image, dtype=np.uint8)
    except ImageError:
        raise
    except Exception as err:  # a broken EXIF block, an odd mode, a decoder bug: this file only
        raise ImageError(
            f"the image could not be converted ({type(err).__name__}: {err})"
        ) from None


def load_images(sources, size=IMAGE_SIZE, crop=True) -> np.ndarray:
    """Several images as one batch; see `load_image`. A 4-D array is taken as a batch.

    A batch that is already what this returns, a uint8 `(N, size, size, 3)` array (such
    as `x_test`, or an earlier result), is copied as it is: `load_image` would return
    each of its images unchanged.

    Returns:
        A uint8 array `(N, size, size, 3)`.
    """
    if isinstance(sources, np.ndarray) and sources.ndim == 4:
        if sources.dtype == np.uint8 and sources.shape[1:] == (size, size, 3):
            return np.array(sources)  # a new array, as np.stack below makes
        sources = list(sources)
    elif isinstance(sources, (str, os.PathLike, bytes, Image.Image, np.ndarray)):
        sources = [sources]
    images = [load_image(s, size=size, crop=crop) for s in sources]
    if not images:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack(images)
