"""`infaas up` takes its data dir with an flock on ``<data_dir>/infaas-up.lock``: a second taker fails at
once naming the dir and the pid holding it; closing the descriptor (the process ending) frees it.

(Two real `infaas up` processes: tests/e2e/test_cli.py.)"""

from __future__ import annotations

import os
import re

import pytest

from infaas.local.stack import LOCK_FILE, StartError, lock_data_dir


def test_a_second_lock_on_a_data_dir_names_the_dir_and_the_holder(tmp_path):
    fd = lock_data_dir(str(tmp_path))
    try:
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with pytest.raises(StartError) as err:
            lock_data_dir(str(tmp_path))  # a second open file description: flock refuses it as it would another process
        assert str(err.value) == (f"the data dir {tmp_path} is in use by another 'infaas up' (pid {os.getpid()}); stop "
                                  "that one, or give this one its own with --data-dir or INFAAS_DATA_DIR")
    finally:
        os.close(fd)
    fd = lock_data_dir(str(tmp_path))  # free again once the holder closed it
    os.close(fd)


def test_the_pid_left_by_a_previous_holder_is_replaced(tmp_path):
    (tmp_path / LOCK_FILE).write_text("999999999\n")  # a stack that died: its lock died with it
    fd = lock_data_dir(str(tmp_path))
    try:
        assert re.fullmatch(rf"{os.getpid()}\n", (tmp_path / LOCK_FILE).read_text())
    finally:
        os.close(fd)
