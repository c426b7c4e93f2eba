"""A 2.5D residual U-Net (ResUNet) for hemorrhage subtype segmentation, in Keras 3.

Only ``keras.layers`` and ``keras.ops`` are used, so the saved ``.keras`` file
runs on the TensorFlow, JAX and PyTorch backends alike. The loss, metric and
ignore label it is trained with are Keras custom objects the runtime must
register before it loads a saved file, so they live in
:mod:`dicom_node.pipelines.ich_layers`.

References
----------
Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical
Image Segmentation. MICCAI 2015. Zhang Z, Liu Q, Wang Y. Road Extraction by
Deep Residual U-Net. IEEE GRSL 2018;15(5):749-753 (residual units).
"""

from __future__ import annotations

from typing import Any

from dicom_node.pipelines.keras_runtime import import_keras

keras = import_keras("train")  # TensorFlow's native start-up lines stay off stderr
layers = keras.layers

#: keras.Model, as a name mypy accepts in an annotation (keras ships no types).
_Model = Any


def _residual_block(x, filters: int, name: str):
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, padding="same", name=f"{name}_proj")(x)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resunet(
    *, size: int, channels: int, classes: int, filters: tuple[int, ...] = (16, 32, 64, 128)
) -> _Model:
    """Build the ResUNet.

    Parameters
    ----------
    size : int
        Rows and columns of the input (a multiple of ``2 ** (len(filters) - 1)``).
    channels : int
        Input channels (windows x stacked slices).
    classes : int
        Output classes, background first.
    filters : tuple of int
        Filters per resolution level, finest first.

    Returns
    -------
    keras.Model
        Input float32 (batch, size, size, channels) in [0, 1]; output float32
        (batch, size, size, classes), softmax probabilities per pixel.

    Raises
    ------
    ValueError
        If ``size`` is not divisible by the total downsampling factor.

    References
    ----------
    Ronneberger O, et al. MICCAI 2015 (U-Net); Zhang Z, et al. IEEE GRSL
    2018;15(5):749-753 (residual units: two 3 x 3 convolutions with batch
    normalisation and an identity or 1 x 1 projection shortcut).
    """
    factor = 2 ** (len(filters) - 1)
    if size % factor:
        raise ValueError(f"size {size} must be a multiple of {factor}")
    inputs = keras.Input((size, size, channels), name="ct_windows")
    x = inputs
    skips = []
    for level, f in enumerate(filters):
        x = _residual_block(x, f, f"enc{level}")
        if level < len(filters) - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    for level in range(len(filters) - 2, -1, -1):
        f = filters[level]
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _residual_block(x, f, f"dec{level}")
    outputs = layers.Conv2D(classes, 1, activation="softmax", name="subtype_probabilities")(x)
    return keras.Model(inputs, outputs, name="ich_resunet")
