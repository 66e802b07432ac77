"""nst_core.image_io: every bad input a batch meets gives a one-line ImageError naming
the file; every odd-but-valid image loads upright, RGB, in [0, 1]; saves are atomic."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES, png_header
from nst_core import image_io, storage
from nst_core.image_io import DEFAULT_MAX_PIXELS, ImageError, check_header, image_size, load_image, save_image
from nst_core.storage import LOCAL, Storage

CHELSEA = SAMPLES / "content" / "chelsea.jpg"
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _write(path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


# --- bad input: one line, the file's name, the problem ---------------------------------


def _assert_one_line_naming(error: pytest.ExceptionInfo, uri: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{uri}: ") and "\n" not in message


def test_empty_file(tmp_path):
    uri = _write(tmp_path / "photos" / "a.jpg", b"")
    with pytest.raises(ImageError, match=r"empty file \(0 bytes\)") as error:
        load_image(uri, LOCAL)
    _assert_one_line_naming(error, uri)


def test_truncated_jpeg(tmp_path):
    data = CHELSEA.read_bytes()
    uri = _write(tmp_path / "x.jpg", data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt image data") as error:
        load_image(uri, LOCAL)
    _assert_one_line_naming(error, uri)


def test_text_file_named_jpg(tmp_path):
    uri = _write(tmp_path / "notes.jpg", b"shopping list: eggs, milk\n" * 20)
    with pytest.raises(ImageError, match="not an image Pillow can read") as error:
        load_image(uri, LOCAL)
    _assert_one_line_naming(error, uri)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # 10^10 pixels: decoding would need ~10 GB; it must fail at once, from the header.
    uri = _write(tmp_path / "bomb.png", png_header(100_000, 100_000))
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"10000000000 pixels is over .*limit of \d+ pixels") as error:
        load_image(uri, LOCAL)
    assert time.perf_counter() - started < 2
    _assert_one_line_naming(error, uri)


def test_image_over_our_limit_is_refused_with_its_size(tmp_path):
    # 10^8 pixels: under Pillow's hard limit, over DEFAULT_MAX_PIXELS.
    uri = _write(tmp_path / "big.png", png_header(10_000, 10_000))
    started = time.perf_counter()
    with pytest.raises(ImageError, match=f"10000 x 10000 pixels is over the limit of {DEFAULT_MAX_PIXELS} pixels"):
        load_image(uri, LOCAL)
    assert time.perf_counter() - started < 2


def test_max_pixels_is_the_callers_limit(tmp_path):
    uri = _write(tmp_path / "small.png", _encoded(Image.new("RGB", (100, 60)), "PNG"))
    with pytest.raises(ImageError, match="small.png: 100 x 60 pixels is over the limit of 5000 pixels"):
        load_image(uri, LOCAL, max_pixels=5000)
    assert load_image(uri, LOCAL, max_pixels=6000).shape == (60, 100, 3)


def test_missing_file(tmp_path):
    uri = str(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="file not found") as error:
        load_image(uri, LOCAL)
    _assert_one_line_naming(error, uri)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(str(tmp_path), LOCAL)


@pytest.mark.parametrize(
    "name, data",
    [
        ("empty.jpg", b""),
        ("notes.jpg", b"shopping list: eggs, milk\n"),
        ("bomb.png", png_header(100_000, 100_000)),
        ("big.png", png_header(10_000, 10_000)),
        ("missing.jpg", None),
        ("folder.jpg", "a directory"),
    ],
)
def test_the_header_check_refuses_what_loading_would_in_the_same_words(tmp_path, name, data):
    """check_header, which runs check every file with before any work: from the header alone."""
    uri = str(tmp_path / name)
    if data == "a directory":
        os.mkdir(uri)
    elif data is not None:
        _write(tmp_path / name, data)
    with pytest.raises(ImageError) as header:
        check_header(uri, LOCAL)
    with pytest.raises(ImageError) as loaded:
        load_image(uri, LOCAL)
    assert str(header.value) == str(loaded.value)
    _assert_one_line_naming(header, uri)


def test_symlink_loop_is_bad_input_not_a_network_error(tmp_path):
    loop = tmp_path / "loop1.jpg"
    loop.symlink_to(loop.name)
    with pytest.raises(ImageError, match="too many levels of symbolic links") as error:
        load_image(str(loop), LOCAL)
    _assert_one_line_naming(error, str(loop))


def test_fifo_is_refused_at_once_instead_of_blocking(tmp_path):
    import threading

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            load_image(str(fifo), LOCAL)
        except ImageError as error:
            outcome.append(str(error))

    reader = threading.Thread(target=load, daemon=True)  # daemon: a blocked open must not hang the suite
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "opening a FIFO blocked"
    assert outcome == [f"{fifo}: not a regular file (a FIFO, socket or device), not an image file"]


# No one may read it, root included: the kernel checks a sysctl's mode even for root, whom a chmod 0 file
# would not stop (CI runs as root).
WRITE_ONLY = "/proc/sys/vm/drop_caches"


@pytest.mark.skipif(not os.path.exists(WRITE_ONLY), reason="needs Linux's /proc/sys")
def test_local_permission_denied(tmp_path):
    path = tmp_path / "locked.jpg"
    path.symlink_to(WRITE_ONLY)
    with pytest.raises(ImageError, match=r"locked.jpg: permission denied \(") as error:
        load_image(str(path), LOCAL)
    _assert_one_line_naming(error, str(path))


def test_s3_object_without_read_permission(s3_iam_enforced):
    import s3fs

    reader = s3fs.S3FileSystem(**s3_iam_enforced, skip_instance_cache=True)
    assert reader.ls("nst-test/private") == ["nst-test/private/a.jpg"]  # visible: only reading is denied
    uri = "s3://nst-test/private/a.jpg"
    with pytest.raises(ImageError, match=r"permission denied \((Access Denied|Forbidden)\)") as error:
        load_image(uri, Storage(s3_iam_enforced))
    _assert_one_line_naming(error, uri)


@pytest.mark.parametrize("uri", ["s3://nst-test/no/such/key.jpg", "s3://no-such-bucket/a.jpg"])
def test_s3_missing_object_or_bucket(s3, uri):
    _, options = s3
    with pytest.raises(ImageError, match="file not found") as error:
        load_image(uri, Storage(options))
    _assert_one_line_naming(error, uri)


def test_unreachable_endpoint_propagates_for_retry():
    import botocore.exceptions

    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"connect_timeout": 0.2, "retries": {"max_attempts": 1}},
    }
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        load_image("s3://nst-test/a.jpg", Storage(options))


@pytest.mark.parametrize("transient", [TimeoutError("read timed out"), ConnectionResetError("reset by peer")])
def test_transient_os_errors_propagate_unchanged(monkeypatch, transient):
    # Both are OSErrors: a broad `except OSError` in the loader would turn them into ImageError.
    def flaky_open(*args, **kwargs):
        raise transient

    monkeypatch.setattr(Storage, "open", flaky_open)
    with pytest.raises(type(transient)) as error:
        load_image("s3://nst-test/a.jpg", Storage())
    assert error.value is transient


# --- odd but valid images -----------------------------------------------------------------


def test_one_pixel_image_is_upscaled(tmp_path):
    uri = _write(tmp_path / "dot.png", _encoded(Image.new("RGB", (1, 1), (255, 128, 0)), "PNG"))
    image = load_image(uri, LOCAL, max_side=7)
    assert image.shape == (7, 7, 3)
    np.testing.assert_allclose(image, np.broadcast_to([1.0, 128 / 255, 0.0], (7, 7, 3)), atol=1e-6)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    uri = _write(
        tmp_path / "anim.gif", _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    )
    assert Image.open(uri).n_frames == 2
    image = load_image(uri, LOCAL)
    assert image.shape == (8, 8, 3)
    np.testing.assert_allclose(image, np.broadcast_to([1.0, 0.0, 0.0], image.shape), atol=1e-6)


@pytest.mark.parametrize("dtype, format", [(np.uint16, "PNG"), (">u2", "TIFF")])
def test_16_bit_keeps_its_full_range(tmp_path, dtype, format):
    values = np.array([[0, 1000, 32768, 65535]], dtype=dtype)
    source = Image.fromarray(values)
    assert source.mode in ("I;16", "I;16B")
    uri = _write(tmp_path / f"deep.{format.lower()}", _encoded(source, format))
    image = load_image(uri, LOCAL)
    assert image.shape == (1, 4, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, :, 0], [0.0, 1000 / 65535, 0.5, 1.0], atol=1e-4)
    assert np.all(image[..., 0] == image[..., 2])  # grey stays grey


def test_float_tiff_is_taken_as_0_to_1(tmp_path):
    source = Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32))
    assert source.mode == "F"
    uri = _write(tmp_path / "float.tif", _encoded(source, "TIFF"))
    np.testing.assert_allclose(load_image(uri, LOCAL)[0, :, 1], [0.0, 0.25, 1.0], atol=1e-4)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    uri = _write(tmp_path / "print.jpg", _encoded(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    image = load_image(uri, LOCAL)
    assert image.shape == (16, 16, 3)
    np.testing.assert_allclose(image.mean(axis=(0, 1)), [1.0, 0.0, 0.0], atol=0.05)  # red, not cyan


def _upright_with_red_corner() -> Image.Image:
    """Portrait 24 x 48 (W x H), red block at the top left, blue at the bottom right."""
    upright = Image.new("RGB", (24, 48), (128, 128, 128))
    upright.paste(RED, (0, 0, 8, 8))
    upright.paste(BLUE, (16, 40, 24, 48))
    return upright


@pytest.mark.parametrize("orientation, stored_as", [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270)])
def test_exif_orientation_is_applied(tmp_path, orientation, stored_as):
    # A camera held sideways stores the picture rotated and says so in EXIF: undo that.
    stored = _upright_with_red_corner().transpose(stored_as)
    exif = Image.Exif()
    exif[0x0112] = orientation
    uri = _write(tmp_path / f"sideways{orientation}.jpg", _encoded(stored, "JPEG", quality=95, exif=exif))
    assert Image.open(uri).size == (48, 24)
    image = load_image(uri, LOCAL)
    assert image.shape == (48, 24, 3)
    np.testing.assert_allclose(image[1:7, 1:7].mean(axis=(0, 1)), [1, 0, 0], atol=0.1)
    np.testing.assert_allclose(image[41:47, 17:23].mean(axis=(0, 1)), [0, 0, 1], atol=0.1)
    assert image_size(uri, LOCAL) == (24, 48)


def test_path_with_spaces_and_non_ascii(tmp_path):
    uri = str(tmp_path / "dir with spaces" / "café ñ.png")
    save_image(np.full((5, 6, 3), 0.25, np.float32), uri, LOCAL)
    assert os.listdir(tmp_path / "dir with spaces") == ["café ñ.png"]
    image = load_image(uri, LOCAL)
    assert image.shape == (5, 6, 3)
    np.testing.assert_allclose(image, 64 / 255, atol=1e-6)


@pytest.mark.parametrize(
    "mode, colour, expected",
    [
        ("RGBA", (0, 0, 0, 0), (1, 1, 1)),  # fully transparent black: white paper
        ("RGBA", (255, 0, 0, 128), (1, 127 / 255, 127 / 255)),  # half red over white
        ("LA", (0, 0), (1, 1, 1)),
    ],
)
def test_alpha_is_composited_over_white(tmp_path, mode, colour, expected):
    uri = _write(tmp_path / "alpha.png", _encoded(Image.new(mode, (4, 4), colour), "PNG"))
    np.testing.assert_allclose(load_image(uri, LOCAL)[0, 0], expected, atol=1.5 / 255)


def test_palette_image(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    palette.putdata([0, 1])
    uri = _write(tmp_path / "palette.png", _encoded(palette, "PNG"))
    np.testing.assert_allclose(load_image(uri, LOCAL)[0], [[1, 0, 0], [0, 0, 1]], atol=1e-6)


def test_palette_with_transparent_index(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    palette.putdata([0, 1])
    uri = _write(tmp_path / "palette.png", _encoded(palette, "PNG", transparency=0))
    np.testing.assert_allclose(load_image(uri, LOCAL)[0], [[1, 1, 1], [0, 1, 0]], atol=1e-6)


@pytest.mark.parametrize("mode, value, expected", [("L", 100, 100 / 255), ("1", 1, 1.0)])
def test_greyscale_becomes_three_equal_channels(tmp_path, mode, value, expected):
    uri = _write(tmp_path / "grey.png", _encoded(Image.new(mode, (3, 2), value), "PNG"))
    image = load_image(uri, LOCAL)
    assert image.shape == (2, 3, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_sample_images_load():
    for path in sorted(SAMPLES.glob("*/*.jpg")):
        image = load_image(str(path), LOCAL)
        assert image.dtype == np.float32 and max(image.shape[:2]) == 256
        assert 0.0 <= image.min() < image.max() <= 1.0


# --- resizing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, max_side, expected",
    [
        ((256, 170), 128, (128, 85)),  # wide, down
        ((201, 256), 64, (50, 64)),  # tall, down
        ((20, 10), 64, (64, 32)),  # up
        ((1000, 1), 10, (10, 1)),  # a side never drops to 0
    ],
)
def test_max_side_sets_the_longest_side_and_keeps_aspect(tmp_path, size, max_side, expected):
    uri = _write(tmp_path / "any.png", _encoded(Image.new("RGB", size, (10, 200, 30)), "PNG"))
    image = load_image(uri, LOCAL, max_side=max_side)
    assert (image.shape[1], image.shape[0]) == expected
    np.testing.assert_allclose(image.mean(axis=(0, 1)), np.array([10, 200, 30]) / 255, atol=2 / 255)


def test_real_photo_resize(tmp_path):
    image = load_image(str(CHELSEA), LOCAL, max_side=100)
    assert image.shape == (66, 100, 3)
    assert load_image(str(CHELSEA), LOCAL).shape == (170, 256, 3)


# --- saving -------------------------------------------------------------------------------


def _gradient(height=32, width=48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([x / (width - 1), y / (height - 1), 1 - x / (width - 1)], axis=-1)


@pytest.mark.parametrize(
    "name, tolerance", [("a.png", 0.5 / 255), ("a.tif", 0.5 / 255), ("a.webp", 0.03), ("a.jpg", 0.03), ("a.JPEG", 0.03)]
)
def test_save_and_load_roundtrip(tmp_path, name, tolerance):
    original = _gradient()
    save_image(original, str(tmp_path / name), LOCAL)
    loaded = load_image(str(tmp_path / name), LOCAL)
    assert loaded.shape == original.shape
    assert np.abs(loaded - original).mean() <= tolerance


def test_save_clips_out_of_range_values(tmp_path):
    image = np.array([[[-0.5, 1.5, np.nan]]], np.float32)
    save_image(image, str(tmp_path / "clipped.png"), LOCAL)
    np.testing.assert_allclose(load_image(str(tmp_path / "clipped.png"), LOCAL)[0, 0], [0, 1, 0])


def test_save_creates_directories_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "out" / "deep" / "a.png"
    save_image(_gradient(), str(target), LOCAL)
    assert os.listdir(target.parent) == ["a.png"]


def test_save_writes_through_a_hidden_temporary_in_the_same_directory(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(storage.os, "replace", lambda src, dst: (replaced.append((src, dst)), real_replace(src, dst)))
    save_image(_gradient(), str(tmp_path / "a.png"), LOCAL)
    ((source, destination),) = replaced
    assert os.path.dirname(source) == str(tmp_path) and os.path.basename(source).startswith(".")
    assert destination.endswith("a.png")


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.float32)])
def test_failed_encode_leaves_nothing_and_keeps_the_old_file(tmp_path, image):
    name = "result.xyz" if image.ndim == 3 else "result.png"
    target = tmp_path / name
    target.write_bytes(b"the previous result")
    with pytest.raises(ImageError, match=name):
        save_image(image, str(target), LOCAL)
    assert target.read_bytes() == b"the previous result"
    assert os.listdir(tmp_path) == [name]


def test_failed_write_removes_the_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    target.write_bytes(b"the previous result")

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(_gradient(), str(target), LOCAL)
    assert target.read_bytes() == b"the previous result"
    assert os.listdir(tmp_path) == ["a.png"]


def test_an_output_path_that_is_a_directory_names_the_output(tmp_path):
    taken = tmp_path / "a.png"
    taken.mkdir()
    with pytest.raises(ImageError, match="cannot write it: is a directory") as error:
        save_image(_gradient(), str(taken), LOCAL)
    _assert_one_line_naming(error, str(taken))
    assert os.listdir(tmp_path) == ["a.png"] and not os.listdir(taken)  # no temporary left behind


def test_unknown_extension_names_the_file(tmp_path):
    with pytest.raises(ImageError, match=r"out.xyz: unknown image extension '.xyz'"):
        save_image(_gradient(), str(tmp_path / "sub" / "out.xyz"), LOCAL)
    assert not (tmp_path / "sub").exists()


# --- S3 -----------------------------------------------------------------------------------


def test_s3_save_and_load_roundtrip(s3):
    fs, options = s3
    original = _gradient()
    save_image(original, "s3://nst-test/out/a.png", Storage(options))
    assert fs.ls("nst-test/out") == ["nst-test/out/a.png"]
    loaded = load_image("s3://nst-test/out/a.png", Storage(options), max_side=24)
    assert loaded.shape == (16, 24, 3)
    np.testing.assert_allclose(load_image("s3://nst-test/out/a.png", Storage(options)), original, atol=0.5 / 255)
    assert image_size("s3://nst-test/out/a.png", Storage(options)) == (48, 32)


# ---- photo libraries: HEIC, colour profiles, EXIF, 16-bit outputs ------------------------------


def test_heic_photos_read_and_folders_list_them(tmp_path, samples):
    import pillow_heif

    from flows.manifest import expand_manifest

    picture = Image.open(SAMPLES / "content" / "chelsea.jpg").convert("RGB").resize((64, 48))
    (tmp_path / "photos").mkdir()
    pillow_heif.from_pillow(picture).save(str(tmp_path / "photos" / "iphone.heic"), quality=95)
    loaded = load_image(str(tmp_path / "photos" / "iphone.heic"), LOCAL)
    assert loaded.shape == (48, 64, 3) and np.abs(loaded - np.asarray(picture) / 255.0).mean() < 0.03
    samples("", the_scream="scream.jpg")
    (tmp_path / "m.csv").write_text("content,style\nphotos,scream.jpg\n")
    pairs, _ = expand_manifest(str(tmp_path / "m.csv"), str(tmp_path / "out"), storage=LOCAL)
    assert [os.path.basename(p.content) for p in pairs] == ["iphone.heic"]  # a folder of iPhone photos


def _icc_profile(primaries, gamma: float) -> bytes:
    """A matrix/TRC RGB ICC v2 profile (what Adobe RGB is): D50-adapted XYZ of the three primaries
    and one gamma for all channels. LittleCMS reads it like any camera's or editor's profile."""

    def xyz(values):
        return b"XYZ \0\0\0\0" + b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    desc_text = b"synthetic wide-gamut RGB\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 79),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        *((name, xyz(p)) for name, p in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries)),
        *((name, b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))) for name in (b"rTRC", b"gTRC", b"bTRC")),
    ]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for name, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + struct.pack(">iii", 63190, 65536, 54061)
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


ADOBE_RGB_D50 = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


def test_a_photos_colour_profile_is_converted_to_srgb(tmp_path):
    from PIL import ImageCms

    profile = _icc_profile(ADOBE_RGB_D50, 2.2)
    raw = Image.fromarray((_gradient(24, 32) * 255).astype(np.uint8), "RGB")
    uri = _write(tmp_path / "adobe.jpg", _encoded(raw, "JPEG", quality=100, subsampling=0, icc_profile=profile))
    untagged = _write(tmp_path / "untagged.jpg", _encoded(raw, "JPEG", quality=100, subsampling=0))
    expected = ImageCms.profileToProfile(
        raw, ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    loaded, plain = load_image(uri, LOCAL), load_image(untagged, LOCAL)
    assert np.abs(loaded - np.asarray(expected) / 255.0).mean() < 0.01  # converted like LittleCMS does
    # Adobe RGB's primaries are wider than sRGB's: the same numbers mean other colours, so the pixels change.
    assert np.abs(loaded - plain).mean() > 0.02 and np.abs(plain - np.asarray(raw) / 255.0).mean() < 0.01
    broken = _write(
        tmp_path / "broken-profile.jpg", _encoded(raw, "JPEG", quality=100, subsampling=0, icc_profile=b"junk" * 40)
    )
    with pytest.warns(UserWarning, match="colour profile ignored"):
        assert np.abs(load_image(broken, LOCAL) - plain).mean() < 0.01  # taken as sRGB, like a browser does


def test_exif_is_kept_on_the_output_upright(tmp_path):
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "Pixel 9"
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: load_image turns it
    exif[ExifTags.Base.DateTime] = "2026:06:01 12:00:00"
    photo = Image.fromarray((_gradient(24, 32) * 255).astype(np.uint8), "RGB")
    uri = _write(tmp_path / "photo.jpg", _encoded(photo, "JPEG", exif=exif.tobytes()))
    kept = image_io.read_exif(uri, LOCAL)
    for name in ("out.jpg", "out.png", "out.webp", "out.tif"):
        save_image(load_image(uri, LOCAL), str(tmp_path / name), LOCAL, exif=kept)
        with Image.open(tmp_path / name) as written:
            tags = written.getexif()
            assert tags[ExifTags.Base.Model] == "Pixel 9" and tags[ExifTags.Base.DateTime] == "2026:06:01 12:00:00"
            assert tags.get(ExifTags.Base.Orientation, 1) == 1, name  # the pixels are upright already
            assert written.size == (24, 32)  # turned: 32 x 24 stored, orientation 6
    assert image_io.read_exif(str(SAMPLES / "styles" / "the_scream.jpg"), LOCAL) is None


def test_sixteen_bit_outputs_keep_sixteen_bits(tmp_path):
    import tifffile

    image = _gradient(20, 30) * 0.999 + 1 / 65535  # values between 8-bit levels
    expected = (np.clip(image, 0, 1) * 65535 + 0.5).astype(np.uint16)
    save_image(image, str(tmp_path / "out.tif"), LOCAL, encoding="tiff16")
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), expected)  # an independent TIFF reader
    exif = Image.Exif()
    exif[0x0110] = "Pixel 9"
    save_image(image, str(tmp_path / "out.png"), LOCAL, encoding="png16", exif=exif.tobytes())
    data = (tmp_path / "out.png").read_bytes()
    assert data[24:26] == bytes([16, 2])  # IHDR: 16 bits per sample, truecolour
    with Image.open(tmp_path / "out.png") as png:  # Pillow reads it (at 8 bits) and its EXIF
        png.load()
        assert png.size == (30, 20) and png.getexif()[0x0110] == "Pixel 9"
        assert np.abs(np.asarray(png.convert("RGB"), np.float32) - expected / 257.0).max() <= 1.0
    idat = data.index(b"IDAT")
    rows = np.frombuffer(
        zlib.decompress(data[idat + 4 : idat + 4 + int.from_bytes(data[idat - 4 : idat], "big")]), np.uint8
    ).reshape(20, 1 + 30 * 6)
    assert np.array_equal(rows[:, 1:].copy().view(">u2").reshape(20, 30, 3), expected)  # every 16-bit sample
    assert (expected % 257 != 0).any()  # the test image really uses the 16 bits


def test_nst_stylize_writes_sixteen_bits_with_the_photos_exif(tmp_path, weights_path):
    import tifffile
    from PIL import ExifTags

    from flows.cli import main

    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "Pixel 9"
    photo = _write(
        tmp_path / "photo.jpg",
        _encoded(Image.open(SAMPLES / "content" / "chelsea.jpg").convert("RGB"), "JPEG", exif=exif.tobytes()),
    )
    style = str(SAMPLES / "styles" / "the_scream.jpg")
    flags = ["--size", "32", "--iterations", "2", "--weights", weights_path]
    assert main(["stylize", photo, style, "-o", str(tmp_path / "o.png"), "--output-format", "tiff16", *flags]) == 2
    assert main(["stylize", photo, style, "-o", str(tmp_path / "o.tif"), "--output-format", "tiff16", *flags]) == 0
    written = tifffile.imread(tmp_path / "o.tif")
    assert written.dtype == np.uint16 and max(written.shape[:2]) == 32 and (written % 257 != 0).any()
    assert main(["stylize", photo, style, "-o", str(tmp_path / "o.jpg"), *flags]) == 0
    with Image.open(tmp_path / "o.jpg") as output:
        assert output.getexif()[ExifTags.Base.Model] == "Pixel 9"  # the photo's EXIF kept
