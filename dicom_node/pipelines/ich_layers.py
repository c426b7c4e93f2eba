"""Keras custom objects of the ICH model: its loss, its metric and the ignore label.

They live with the runtime, not with the training code, because loading a
``.keras`` file that was saved compiled (a training checkpoint, a package
built from one) needs them registered first: :func:`dicom_node.pipelines.ich.load_keras_model`
imports this module before it loads a model. Training
(:mod:`dicom_node.training.resunet`, :mod:`dicom_node.training.train_ich`)
imports them from here.

The registered names (``register_keras_serializable(package="dicom_node")``:
``dicom_node>DiceCrossEntropyLoss``, ``dicom_node>ClassDice``) are what saved
files name; they must not change, or saved checkpoints stop loading.

Only ``keras.ops`` is used, so the objects run on the TensorFlow, JAX and
PyTorch backends alike.

References
----------
Milletari F, et al. V-Net (soft Dice loss). 3DV 2016. Dice LR. Ecology
1945;26(3):297-302.
"""

from __future__ import annotations

from typing import Any

from dicom_node.pipelines.keras_runtime import import_keras

keras = import_keras()  # TensorFlow's native start-up lines stay off stderr
ops = keras.ops

#: keras.losses.Loss and keras.metrics.Metric, as names mypy accepts for a base class
#: (keras ships no types).
_Loss: Any = keras.losses.Loss
_Metric: Any = keras.metrics.Metric

#: Label value of pixels whose class is unknown (for example hemorrhage of an
#: unknown subtype in a dataset with slice-level subtype labels only).
IGNORE_LABEL = 255


@keras.saving.register_keras_serializable(package="dicom_node")
class DiceCrossEntropyLoss(_Loss):
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

    def __init__(
        self,
        classes: int,
        dice_weight: float = 1.0,
        foreground_weight: float = 10.0,
        name: str = "dice_ce",
        **kwargs,
    ) -> None:
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
class ClassDice(_Metric):
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
