"""Images as bytes and arrays: decoding (upright, sRGB, 16-bit, size limits), encoding (8 or 16
bits, EXIF kept), and the readers and writers that get those bytes through a Storage.

Bad input (missing, empty, corrupt, not an image, too large, not readable) raises
ImageError with a one-line message naming the file, so a batch can record it and
move on. Network trouble (timeouts, resets) is not bad input: it propagates
unchanged so the caller can retry.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import warnings
import zlib
from typing import Iterator

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import PERMANENT_ERRNOS, ImageError, first_line
from .storage import Storage

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own Image.MAX_IMAGE_PIXELS default
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}  # 16-bit grey (PNG, TIFF) opens as these
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}

HEIF_EXTENSIONS = (".heic", ".heif")  # iPhones' photos: read through pillow-heif, the `heif` extra
OUTPUT_FORMATS = ("png", "png16", "tiff16")  # `--output-format`: 8-bit by extension, or 16 bits per channel


def _register_heif() -> bool:
    """Let Pillow open HEIC/HEIF when pillow-heif is installed (optional: `pip install nst-pipeline[heif]`)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


HEIF_READABLE = _register_heif()
_SRGB = ImageCms.createProfile("sRGB")


@contextlib.contextmanager
def _input_errors(uri: str) -> Iterator[None]:
    """Turn the ways an input file can be bad into ImageError.

    Only these specific OSErrors: ConnectionError and TimeoutError are OSErrors
    too, and must reach the caller unchanged to be retried.
    """
    try:
        yield
    except FileNotFoundError:
        raise ImageError(f"{uri}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{uri}: is a directory, not an image file") from None
    except PermissionError as error:  # s3fs maps S3's AccessDenied to PermissionError too
        raise ImageError(f"{uri}: permission denied ({first_line(error)})") from error
    except UnidentifiedImageError:
        if uri.lower().endswith(HEIF_EXTENSIONS) and not HEIF_READABLE:
            raise ImageError(f"{uri}: HEIC/HEIF needs pillow-heif: pip install 'nst-pipeline[heif]'") from None
        raise ImageError(f"{uri}: not an image Pillow can read") from None
    except Image.DecompressionBombError as error:
        # Pillow itself refuses past twice Image.MAX_IMAGE_PIXELS, before we see the size;
        # its message has the pixel count (not the width and height).
        found = re.search(r"\((\d+) pixels\)", str(error))
        count = found.group(1) if found else "too many"
        raise ImageError(
            f"{uri}: {count} pixels is over Pillow's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels"
        ) from error
    except OSError as error:  # a symlink loop, a path through a file, ...: not the network
        if error.errno not in PERMANENT_ERRNOS:
            raise
        raise ImageError(f"{uri}: {first_line(error).lower()}") from error


def _check_regular(uri: str, storage: Storage) -> None:
    """Refuse a local path that is not a regular file: opening a FIFO blocks until a writer comes."""
    path = storage.local_path(uri)
    if path is not None:
        mode = os.stat(path).st_mode  # follows links; a loop raises ELOOP, turned into ImageError
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a directory has its own message
            raise ImageError(f"{uri}: not a regular file (a FIFO, socket or device), not an image file")


def _open_header(uri: str, data: io.BytesIO, max_pixels: int) -> Image.Image:
    """Open (header only, nothing decoded yet) and refuse images over max_pixels."""
    with warnings.catch_warnings():  # we apply our own limit just below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(data)
        except (OSError, EOFError, SyntaxError) as error:  # bytes are in memory: not a network error
            if isinstance(error, UnidentifiedImageError):
                raise
            raise ImageError(f"{uri}: truncated or corrupt image data") from None
    _refuse_over(uri, image.size, max_pixels)
    return image


def _refuse_over(uri: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(f"{uri}: {width} x {height} pixels is over the limit of {max_pixels} pixels")


def _decode(uri: str, image: Image.Image) -> Image.Image:
    """Decode the pixels, turn them upright (EXIF orientation) and into sRGB (embedded ICC profile)."""
    try:
        image.load()  # the first frame of an animation: Image.open leaves it at frame 0
        profile = image.info.get("icc_profile")
        return _to_srgb(uri, ImageOps.exif_transpose(image), profile)
    except (OSError, EOFError, SyntaxError, ValueError):  # bytes are in memory: no network errors here
        raise ImageError(f"{uri}: truncated or corrupt image data") from None


def _to_srgb(uri: str, image: Image.Image, profile: bytes | None) -> Image.Image:
    """The pixels converted from the photo's ICC profile (Adobe RGB, Display P3, a CMYK press profile...)
    to sRGB, which is what VGG was trained on and what an untagged output is taken to be. Untagged
    images are taken as sRGB already; a profile LittleCMS cannot read is ignored, as browsers do."""
    if not profile or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            image, source, _SRGB, outputMode=mode, renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        warnings.warn(f"{uri}: colour profile ignored ({first_line(error)})", stacklevel=2)
        return image
    converted.info.pop("icc_profile", None)
    return converted


def _working_image(image: Image.Image) -> Image.Image:
    """RGB for 8-bit images, "F" (values 0..65535) for 16-bit grey, so resizing keeps its precision."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return image.convert("F") if image.mode == "I" else image.convert("I").convert("F")
    if image.mode == "F":
        return image.point(lambda value: value * 65535)  # float images are taken as [0, 1]
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # Transparent pixels have arbitrary colour underneath: show them as white paper.
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def size_for(shape, longest_side: int) -> tuple[int, int]:
    """(height, width) with the longest side `longest_side` (up or down), aspect kept, no side below 1 px."""
    height, width = shape[:2]
    factor = longest_side / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))  # the longest rounds to longest_side


def resized_picture(picture: Image.Image, longest_side: int) -> Image.Image:
    """A PIL image with its longest side exactly `longest_side`, aspect kept (Lanczos)."""
    height, width = size_for((picture.height, picture.width), longest_side)
    return picture.resize((width, height), Image.Resampling.LANCZOS)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as 8-bit samples, to the nearest; NaN as 0."""
    return (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _to_array(image: Image.Image) -> np.ndarray:
    if image.mode == "F":
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
    return np.asarray(image, dtype=np.float32) / 255.0


def load_image(
    uri: str, storage: Storage, *, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """An image as float32 (H, W, 3) in [0, 1], upright, optionally resized so its longest side is max_side.

    Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) still applies above max_pixels.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    return decode_image(_read(uri, storage), uri, max_side=max_side, max_pixels=max_pixels)


def _read(uri: str, storage: Storage) -> bytes:
    """The file's bytes in one read: a remote file then costs one GET, and decoding touches no network."""
    with _input_errors(uri):
        _check_regular(uri, storage)
        with storage.open(uri) as handle:
            data = handle.read()
    if not data:
        raise ImageError(f"{uri}: empty file (0 bytes)")
    return data


def decode_image(
    data: bytes, uri: str, *, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A file's bytes as load_image returns them; `uri` names the file in errors."""
    with _input_errors(uri):
        image = _open_header(uri, io.BytesIO(data), max_pixels)
    image = _working_image(_decode(uri, image))
    if max_side is not None:
        image = resized_picture(image, max_side)
    return _to_array(image)


@contextlib.contextmanager
def _header(uri: str, storage: Storage, max_pixels: int) -> Iterator[Image.Image]:
    """The image opened lazily (its header read, nothing decoded), refused as load_image would refuse
    it before decoding: missing, unreadable, empty, not an image, more than max_pixels."""
    with _input_errors(uri):
        _check_regular(uri, storage)
        with storage.open_head(uri) as handle:
            if not handle.read(1):
                raise ImageError(f"{uri}: empty file (0 bytes)")
            handle.seek(0)
            with warnings.catch_warnings():  # refused just below, in load_image's words
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(handle)
            _refuse_over(uri, image.size, max_pixels)
            yield image


def check_header(uri: str, storage: Storage, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """ImageError, in load_image's words, for a file it would refuse from the header alone; cheap
    enough to check every file before any work (a few KB read, nothing decoded)."""
    with _header(uri, storage, max_pixels):
        pass


def image_size(uri: str, storage: Storage) -> tuple[int, int]:
    """(width, height) as load_image would return it upright, from the header (a PNG whose EXIF
    follows its pixels is decoded to find it)."""
    with _header(uri, storage, DEFAULT_MAX_PIXELS) as image:
        width, height = image.size
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def read_exif(uri: str, storage: Storage) -> bytes | None:
    """The photo's EXIF (camera, date, GPS...) to keep on its output, with the orientation reset to
    upright (load_image already turned the pixels); None when it has none."""
    with _input_errors(uri), storage.open(uri) as handle:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            exif = Image.open(handle).getexif()  # header only
    if not exif:
        return None
    exif[ExifTags.Base.Orientation] = 1
    return exif.tobytes()


def encode_image(
    image: np.ndarray, uri: str, *, quality: int = 95, exif: bytes | None = None, encoding: str | None = None
) -> bytes:
    """Float [0, 1] (H, W, 3) as file bytes: 8-bit in the format of uri's extension, or with
    `encoding` png16 or tiff16 (an OUTPUT_FORMATS name), 16 bits per channel. `exif` is kept where the format can hold it."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ImageError(f"{uri}: expected an (H, W, 3) image, got shape {image.shape}")
    clipped = np.clip(np.nan_to_num(image), 0.0, 1.0)
    if encoding in ("png16", "tiff16"):
        pixels = (clipped * 65535.0 + 0.5).astype(">u2")  # both formats: big-endian samples
        return _png16(pixels, exif) if encoding == "png16" else _tiff16(pixels)
    if encoding not in (None, "png"):
        raise ImageError(f"{uri}: unknown output format {encoding!r} (use {', '.join(OUTPUT_FORMATS)})")
    return encode_picture(Image.fromarray(to_uint8(clipped), "RGB"), uri, quality=quality, exif=exif)


# Pillow holds RGB at 8 bits per channel only, so 16-bit outputs are written here: both formats are
# a header before the raw big-endian samples.
def _png16(pixels: np.ndarray, exif: bytes | None) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1).view(np.uint8)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, truecolour, no interlace
    extra = [chunk(b"sRGB", b"\x00")]  # perceptual intent: the pixels are sRGB (see _to_srgb)
    if exif:  # eXIf holds the TIFF-structured data, without JPEG's "Exif\0\0" prefix
        extra.append(chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + b"".join(extra)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def _tiff16(pixels: np.ndarray) -> bytes:
    """A baseline uncompressed RGB TIFF, one strip, big-endian."""
    height, width, _ = pixels.shape
    data = pixels.tobytes()
    tags = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    bits_at = 8 + ifd_size  # the three BitsPerSample values do not fit in their entry
    data_at = bits_at + 6
    entries = b"".join(
        struct.pack(">HHI", tag, kind, count)
        + (
            struct.pack(">I", bits_at)
            if tag == 258
            else struct.pack(">I", data_at)
            if tag == 273
            else struct.pack(">HH", value, 0)
            if kind == 3
            else struct.pack(">I", value)
        )
        for tag, kind, count, value in tags
    )
    return (
        b"MM\x00\x2a"
        + struct.pack(">I", 8)
        + struct.pack(">H", len(tags))
        + entries
        + struct.pack(">I", 0)
        + struct.pack(">HHH", 16, 16, 16)
        + data
    )


def output_format(uri: str) -> str:
    """Pillow's format for writing `uri`, from its extension; ImageError naming the file when it
    has none (a folder such as `out/` included)."""
    extension = os.path.splitext(uri)[1].lower()
    if uri.endswith("/"):
        raise ImageError(f"{uri}: a folder, not an image file; name the output, e.g. {uri}out.png")
    if extension not in _FORMATS:
        raise ImageError(f"{uri}: unknown image extension {extension!r} (use {', '.join(_FORMATS)})")
    return _FORMATS[extension]


def encoding_problem(uri: str, encoding: str | None) -> str | None:
    """Why `uri`'s extension does not fit `--output-format encoding` (png and png16 write PNG, tiff16 TIFF), or None."""
    wanted = {"png": "PNG", "png16": "PNG", "tiff16": "TIFF"}.get(encoding)
    if wanted is None or output_format(uri) == wanted:
        return None
    return (
        f"--output-format {encoding} writes {wanted}; name the output {'.png' if wanted == 'PNG' else '.tif or .tiff'}"
    )


def default_extension(encoding: str | None) -> str:
    """The extension of outputs named by the pipeline: `.tif` for tiff16, else `.png`."""
    return ".tif" if encoding == "tiff16" else ".png"


def encode_picture(picture: Image.Image, uri: str, *, quality: int = 95, exif: bytes | None = None) -> bytes:
    """A PIL image as file bytes, format chosen by uri's extension; `exif` kept (all four formats hold it)."""
    kind = output_format(uri)
    buffer = io.BytesIO()
    options = {"quality": quality} if kind in ("JPEG", "WEBP") else {}
    picture.save(buffer, format=kind, **options, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def save_image(
    image: np.ndarray,
    uri: str,
    storage: Storage,
    *,
    quality: int = 95,
    exif: bytes | None = None,
    encoding: str | None = None,
) -> None:
    """Write an image atomically: encoded fully in memory first, so a failure leaves no file behind."""
    storage.write_atomic(uri, encode_image(image, uri, quality=quality, exif=exif, encoding=encoding))
