"""The run dir's safety checks: is it writable, and can a checkpoint be read back whole."""

import errno
import os
import tempfile

import tensorflow as tf

from tfm.errors import InputError

CHECKPOINT_DIR = "checkpoints"


def _write_probe(directory):
    fd, probe = tempfile.mkstemp(prefix=".tfm_write_probe_", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only say so when the data must reach it
    finally:
        os.remove(probe)


def check_output_dir(output_dir):
    """Creates `output_dir` and its `checkpoints/` and writes (then removes) a small file in each.

    Run before anything is built, so an unwritable or full run dir fails in a second, not at the first
    checkpoint. Remote paths (`gs://...`) are left to TensorFlow's file system.

    Args:
        output_dir: str, the run dir.

    Raises:
        InputError: naming the directory and the system's reason.
    """
    output_dir = os.fspath(output_dir)
    if "://" in output_dir:
        return
    for directory in (output_dir, os.path.join(output_dir, CHECKPOINT_DIR)):
        try:
            os.makedirs(directory, exist_ok=True)
            _write_probe(directory)
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            if error.errno == errno.ENOSPC:
                reason += " (the disk is full)"
            raise InputError(f"output_dir: cannot write to {directory!r}: {reason}") from None


def first_line(error):
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"


def checkpoint_readable(path):
    """Whether every tensor of checkpoint `path` can be read (index present, data complete, checksums right)."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception:  # noqa: BLE001  (any failure to read is the answer, whatever layer raises it)
        return False
    return True
