"""The frozen VGG feature extractor: built once per process, reused by every pair."""

from __future__ import annotations

import functools
import re
import threading

import h5py
import keras
from keras import ops

from .backend import building_loaded_model, faster_layer, feature_dtype
from .errors import WeightsError
from .settings import settings, variable

WEIGHTS_ENV = variable("weights")
# Caffe-style preprocessing that Keras' VGG weights expect: BGR, mean-subtracted, 0..255.
_BGR_MEAN = (103.939, 116.779, 123.68)
_ARCH_BY_CONV_COUNT = {13: "vgg16", 16: "vgg19"}
_build_lock = threading.Lock()


def min_input_side(layers) -> int:
    """The shortest image side that still reaches every one of `layers` (VGG names such as
    block5_conv1): each block after the first starts with a 2 x 2 pooling, so block5 needs 2**4 =
    16 px (measured: 15 fails inside MaxPooling2D, 16 works; block4: 7 fails, 8 works). Unknown names
    count as block5."""
    blocks = [int(found.group(1)) for found in map(re.compile(r"block(\d+)_").match, layers) if found]
    return 2 ** (max(blocks, default=5) - 1)


def resolve_weights(weights: str | None) -> str:
    """`weights` if given, else $NST_WEIGHTS, else Keras' "imagenet" download."""
    return weights or settings().weights or "imagenet"


def infer_arch(weights_path: str) -> str:
    """VGG16 or VGG19 from the number of 3x3 conv kernels stored in a weights file."""
    kernels = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim == 4 and obj.shape[:2] == (3, 3):
            kernels.append(name)

    try:
        with h5py.File(weights_path, "r") as handle:
            handle.visititems(visit)
    except (OSError, FileNotFoundError) as error:
        raise WeightsError(f"{weights_path}: cannot read VGG weights ({error})") from None
    arch = _ARCH_BY_CONV_COUNT.get(len(kernels))
    if arch is None:
        raise WeightsError(f"{weights_path}: holds {len(kernels)} 3x3 conv kernels; expected 13 (VGG16) or 16 (VGG19)")
    return arch


# Keras' own ImageNet VGG conv weights (keras.applications): name and md5 of each download.
IMAGENET_NOTOP = {
    "vgg19": ("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "253f8cb515780f3b799900260a226db6"),
    "vgg16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc"),
}


def _offline(arch: str, error: Exception) -> WeightsError:
    return WeightsError(
        f"Cannot get the ImageNet {arch.upper()} weights: the download failed ({error}). "
        f"Offline? Pass a local weights file with --weights PATH or set {WEIGHTS_ENV}=PATH."
    )


def fetch_imagenet(arch: str) -> None:
    """Download the ImageNet weights into Keras' cache now (nothing to do once there), so that an
    offline machine hears it in one line before a run starts, not from inside one."""
    name, md5 = IMAGENET_NOTOP[arch]
    was_interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()  # no "Downloading data from ..." line before the error
    try:
        keras.utils.get_file(
            name,
            f"https://storage.googleapis.com/tensorflow/keras-applications/{arch}/{name}",
            cache_subdir="models",
            file_hash=md5,
        )
    except Exception as error:  # Keras raises plain Exception for a failed download
        raise _offline(arch, error) from None
    finally:
        if was_interactive:
            keras.config.enable_interactive_logging()


def check_weights(weights: str | None, arch: str = "auto") -> None:
    """Fail at once on a weights file that is missing or holds no VGG, or on ImageNet weights that
    cannot be downloaded."""
    weights = resolve_weights(weights)
    if weights == "imagenet":
        fetch_imagenet("vgg16" if arch == "vgg16" else "vgg19")
    else:
        infer_arch(weights)


def _load_vgg(arch: str, weights: str) -> keras.Model:
    constructor = {"vgg19": keras.applications.VGG19, "vgg16": keras.applications.VGG16}[arch]
    if weights != "imagenet":
        found = infer_arch(weights)
        if found != arch:
            raise WeightsError(f"{weights}: holds {found.upper()} weights, but arch is {arch}; pass --arch {found}")
    try:
        with building_loaded_model():
            return constructor(include_top=False, weights=weights)
    except Exception as error:  # Keras raises plain Exception for a failed download
        if weights != "imagenet":
            raise WeightsError(f"{weights}: cannot load into {arch.upper()} ({error})") from None
        raise _offline(arch, error) from None


@functools.lru_cache(maxsize=4)
def _extractor(arch: str, weights: str, layers: tuple[str, ...], pooling: str, dtype: str = "float32") -> keras.Model:
    vgg = _load_vgg(arch, weights)
    vgg.trainable = False
    if dtype != "float32":  # float32 weights, convolutions in `dtype` (Keras' mixed precision)
        for layer in vgg.layers:
            layer.dtype_policy = keras.DTypePolicy(f"mixed_{dtype}")
    known = [layer.name for layer in vgg.layers]
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(f"unknown {arch} layer(s): {', '.join(unknown)}")
    deepest = max(known.index(name) for name in layers)
    # Rebuild the graph only up to the deepest layer needed; swap pooling if asked, and layers for the
    # backend's faster ones.
    inputs = keras.Input((None, None, 3))
    x, outputs = inputs, {}
    for layer in vgg.layers[1 : deepest + 1]:
        if pooling == "avg" and isinstance(layer, keras.layers.MaxPooling2D):
            layer = keras.layers.AveragePooling2D(layer.pool_size, layer.strides, name=layer.name)
        x = faster_layer(layer)(x)
        outputs[layer.name] = x
    return keras.Model(inputs, [outputs[name] for name in layers], name=f"{arch}_features")


def resolve_arch(arch: str, weights: str) -> str:
    """ "auto" means VGG19 for Keras' ImageNet download, else whatever the file holds."""
    if arch != "auto":
        return arch
    return "vgg19" if weights == "imagenet" else infer_arch(weights)


def feature_extractor(
    arch: str = "auto",
    weights: str | None = None,
    layers: tuple[str, ...] = ("block1_conv1",),
    pooling: str = "max",
    precision: str | None = None,
):
    """A function from RGB images in [0, 1] (B, H, W, 3) to the listed layers' float32 features.

    Built once per process for each (arch, weights, layers, pooling, feature dtype) and
    cached; `precision` as $NST_PRECISION (nst_core.settings). The model is `extract.model`.
    """
    weights = resolve_weights(weights)
    arch = resolve_arch(arch, weights)
    with _build_lock:  # threads of one worker share one model
        model = _extractor(arch, weights, tuple(layers), pooling, feature_dtype(precision))

    def extract(images) -> list:
        images = ops.convert_to_tensor(images, "float32")
        bgr = ops.flip(images, axis=-1) * 255.0 - ops.convert_to_tensor(_BGR_MEAN, "float32")
        features = model(bgr, training=False)
        features = list(features) if isinstance(features, (list, tuple)) else [features]
        return [ops.cast(f, "float32") for f in features]  # Gram matrices and losses in float32

    extract.model = model
    return extract
