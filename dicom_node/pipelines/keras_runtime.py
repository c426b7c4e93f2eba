"""Import Keras (and TensorFlow, its default backend) without flooding stderr.

TensorFlow's native libraries write start-up lines straight to file descriptor 2
before Python's logging or ``TF_CPP_MIN_LOG_LEVEL`` can act: oneDNN notices,
"Could not find cuda drivers", "failed call to cuInit" on a machine without a
GPU, and absl's "All log messages before absl::InitializeLog()". On a CPU-only
node they say nothing an admin can act on and bury the node's own log.

:func:`import_keras` imports Keras, and with the TensorFlow backend lists the
devices, while file descriptor 2 points at a temporary file; afterwards the
lines in TensorFlow's native format are logged at DEBUG and every other line
(a Python log record of another thread, a warning) is written back to stderr,
so nothing of the node's own is lost. One INFO line says which devices the
framework found. Set ``DICOM_NODE_FRAMEWORK_LOGS=1`` to see the native lines
as they come.

Keras and TensorFlow are the optional extra ``[ich]`` (``[train]`` for training): without
them :func:`import_keras` raises :class:`~dicom_node.errors.MissingExtraError`, whose
message names the ``pip install`` command, instead of a bare ``ImportError``.

References
----------
TensorFlow issue 62075 ("absl::InitializeLog" lines ignore TF_CPP_MIN_LOG_LEVEL);
POSIX ``dup2`` (redirecting a file descriptor).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading

from dicom_node.errors import MissingExtraError

logger = logging.getLogger(__name__)

#: Environment switch that leaves the framework's native start-up lines on stderr.
SHOW_FRAMEWORK_LOGS_ENV = "DICOM_NODE_FRAMEWORK_LOGS"

#: Lines TensorFlow's native code writes: absl's "I0000 00:00:... file.cc:12] ..." and
#: its notice about InitializeLog.
NATIVE_LINE = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl)"
)

#: What needs Keras, by the package extra that brings it (for the error message).
NEEDED_BY = {"ich": "the learned 'ich' pipeline", "train": "training (dicom_node.training)"}

_lock = threading.Lock()
_devices: list[str] | None = None


def import_keras(extra: str = "ich"):
    """Import Keras with the framework's native start-up lines kept off stderr.

    Parameters
    ----------
    extra : str
        The package extra that brings Keras for the caller, named in the error:
        ``"ich"`` for the learned ICH pipeline, ``"train"`` for training.

    Returns
    -------
    module
        ``keras``.

    Raises
    ------
    MissingExtraError
        If Keras or its backend cannot be imported; the message names
        ``pip install 'dicom-node[<extra>]'`` and the ImportError is chained
        (the captured native lines are written to stderr first, since they
        may say why). It is also an ``ImportError``.
    """
    global _devices
    if _devices is not None:
        import keras

        return keras
    with _lock:
        if _devices is not None:
            import keras

            return keras
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            if os.environ.get(SHOW_FRAMEWORK_LOGS_ENV) == "1":
                keras = _import_and_list_devices()
            else:
                keras = _quietly(_import_and_list_devices)
        except ImportError as err:
            needed_by = NEEDED_BY.get(extra, f"the [{extra}] features")
            raise MissingExtraError(
                f"{needed_by} needs Keras 3 and TensorFlow, which cannot be imported ({err}); "
                f"they are the optional extra [{extra}]: pip install 'dicom-node[{extra}]'"
            ) from err
        logger.info(
            "Keras %s, backend %s: %s",
            keras.__version__,
            keras.backend.backend(),
            ", ".join(_devices or ["CPU only"]),
        )
        return keras


def _import_and_list_devices():
    global _devices
    import keras

    devices: list[str] = []
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        devices = [d.name for d in tf.config.list_physical_devices("GPU")]
    _devices = devices
    return keras


def _quietly(function):
    """Run ``function`` with file descriptor 2 captured; sort the captured lines afterwards."""
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            result = function()
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if NATIVE_LINE.match(line) and not failed:
                    logger.debug("framework: %s", line)
                else:
                    sys.stderr.write(line + "\n")
            sys.stderr.flush()
    return result
