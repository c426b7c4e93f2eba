"""TensorFlow's native start-up lines stay off the node's stderr; the node's own lines do not."""

from __future__ import annotations

import os
import subprocess
import sys

from dicom_node.pipelines.keras_runtime import NATIVE_LINE, SHOW_FRAMEWORK_LOGS_ENV

PROGRAM = """
import logging, sys, threading
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from dicom_node.pipelines import keras_runtime
real = keras_runtime._import_and_list_devices
def with_a_node_line():
    # another thread of the node logs while the framework starts
    node = logging.getLogger("dicom_node.receive")
    t = threading.Thread(target=lambda: node.warning("node line"))
    t.start(); t.join()
    return real()
keras_runtime._import_and_list_devices = with_a_node_line
keras = keras_runtime.import_keras()
import numpy as np
keras.ops.convert_to_numpy(keras.ops.add(np.ones(2), 1.0))
"""


def run(show: bool) -> list[str]:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop(SHOW_FRAMEWORK_LOGS_ENV, None)
    if show:
        env[SHOW_FRAMEWORK_LOGS_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return done.stderr.splitlines()


def test_native_lines_are_kept_off_stderr_and_node_lines_are_not():
    quiet = run(show=False)
    assert any("node line" in line for line in quiet), quiet
    assert [line for line in quiet if NATIVE_LINE.match(line)] == [], quiet
    loud = run(show=True)
    assert any("node line" in line for line in loud), loud
    # The switch shows what is hidden by default (here: oneDNN, CUDA and absl lines),
    # which is what makes the first assertion able to fail.
    assert [line for line in loud if NATIVE_LINE.match(line)], loud
