"""A 2.5D residual U-Net (ResUNet) for hemorrhage subtype segmentation, in Keras 3.

Only ``keras.layers`` and ``keras.ops`` are used, so the saved ``.keras`` file
runs on the TensorFlow, JAX and PyTorch backends alike.

References
----------
Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for Biomedical
Image Segmentation. MICCAI 2015. Zhang Z, Liu Q, Wang Y. Road Extraction by
Deep Residual U-Net. IEEE GRSL 2018;15(5):749-753 (residual units).
Milletari F, et al. V-Net (soft Dice loss). 3DV 2016.
"""

from __future__ import annotations

from dicom_node.pipelines.keras_runtime import import_keras

keras = import_keras()  # TensorFlow's native start-up lines stay off stderr
layers, ops = keras.layers, keras.ops

#: Label value of pixels whose class is unknown (for example hemorrhage of an
#: unknown subtype in a dataset with slice-level subtype labels only).
IGNORE_LABEL = 255


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


def build_resunet(*, size: int, channels: int, classes: int,
                  filters: tuple[int, ...] = (16, 32, 64, 128)) -> keras.Model:
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


@keras.saving.register_keras_serializable(package="dicom_node")
class DiceCrossEntropyLoss(keras.losses.Loss):
    """Soft Dice over the foreground classes plus weighted cross-entropy.

    Parameters
    ----------
    classes : int
        Number of classes, background first.
    dice_weight : float
        Weight of the (1 - mean soft Dice) term.
    foreground_weight : float
        Cross-entropy weight of foreground pixels relative to background
        (default 10; :func:`dicom_node.training.train_ich.train_ich` uses the
        default).
    name : str
        Loss name in the Keras logs.
    **kwargs
        Passed to :class:`keras.losses.Loss` (for example ``reduction``).

    Notes
    -----
    ``y_true`` is (batch, rows, columns) integer labels, :data:`IGNORE_LABEL`
    where the subtype is unknown (such pixels add nothing to either term); ``y_pred`` the
    softmax (batch, rows, columns, classes). Soft Dice is computed per class
    over the whole batch ("batch Dice") and averaged over the foreground
    classes present in the batch's labels (the smoothing term is 1 pixel);
    the cross-entropy weights foreground pixels by ``foreground_weight``
    because blood covers well under 1 % of the pixels, and its weighted sum
    is divided by the number of labelled pixels plus 1.

    References
    ----------
    Milletari F, Navab N, Ahmadi SA. V-Net. 3DV 2016 (soft Dice);
    Isensee F, et al. nnU-Net. Nat Methods 2021;18:203-211 (Dice + CE).
    """

    def __init__(self, classes: int, dice_weight: float = 1.0,
                 foreground_weight: float = 10.0, name: str = "dice_ce", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.classes = classes
        self.dice_weight = dice_weight
        self.foreground_weight = foreground_weight

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        valid = ops.cast(ops.not_equal(labels, IGNORE_LABEL), "float32")
        labels = ops.where(labels == IGNORE_LABEL, 0, labels)
        onehot = ops.one_hot(labels, self.classes) * valid[..., None]
        y_pred = ops.clip(y_pred, 1e-6, 1.0)
        ce = -ops.sum(onehot * ops.log(y_pred), axis=-1)
        weight = ops.where(labels > 0, self.foreground_weight, 1.0) * valid
        ce = ops.sum(ce * weight) / (ops.sum(valid) + 1.0)
        fg_true = onehot[..., 1:]
        fg_pred = y_pred[..., 1:] * valid[..., None]
        axes = (0, 1, 2)
        intersection = ops.sum(fg_true * fg_pred, axis=axes)
        denominator = ops.sum(fg_true, axis=axes) + ops.sum(fg_pred, axis=axes)
        dice = (2.0 * intersection + 1.0) / (denominator + 1.0)
        # Mean over the subtypes present in the batch only: a subtype absent from
        # the batch would otherwise reward suppressing every foreground class.
        present = ops.cast(ops.sum(fg_true, axis=axes) > 0, "float32")
        dice_loss = ops.sum((1.0 - dice) * present) / ops.maximum(ops.sum(present), 1.0)
        return ce + self.dice_weight * dice_loss

    def get_config(self) -> dict:
        """Return the constructor arguments (Keras serialisation)."""
        return {
            **super().get_config(),
            "classes": self.classes,
            "dice_weight": self.dice_weight,
            "foreground_weight": self.foreground_weight,
        }


@keras.saving.register_keras_serializable(package="dicom_node")
class ClassDice(keras.metrics.Metric):
    """Dice coefficient of one class, accumulated over all pixels seen.

    Parameters
    ----------
    class_index : int
        Class whose Dice is measured (argmax prediction against the labels).
    name : str
        Metric name, for example ``"dice_subdural"``.

    References
    ----------
    Dice LR. Ecology 1945;26(3):297-302.
    """

    def __init__(self, class_index: int, name: str, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.class_index = class_index
        self.intersection = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch to the running counts.

        Parameters
        ----------
        y_true : array
            Integer labels (batch, rows, columns); pixels equal to
            :data:`IGNORE_LABEL` are left out of the prediction count.
        y_pred : array
            Softmax (batch, rows, columns, classes); its argmax is the
            predicted class.
        sample_weight : None
            Accepted for the Keras interface and ignored.
        """
        labels = ops.cast(y_true, "int32")
        truth = ops.cast(labels == self.class_index, "float32")
        predicted = ops.cast(ops.argmax(y_pred, axis=-1) == self.class_index, "float32")
        predicted = predicted * ops.cast(labels != IGNORE_LABEL, "float32")
        self.intersection.assign_add(ops.sum(truth * predicted))
        self.total.assign_add(ops.sum(truth) + ops.sum(predicted))

    def result(self):
        """Return 2 |A and B| / (|A| + |B|), 0 when both are empty."""
        return ops.where(self.total > 0, 2.0 * self.intersection / (self.total + 1e-9), 0.0)

    def reset_state(self):
        """Start a new accumulation."""
        self.intersection.assign(0.0)
        self.total.assign(0.0)

    def get_config(self) -> dict:
        """Return the constructor arguments (Keras serialisation)."""
        return {**super().get_config(), "class_index": self.class_index}
