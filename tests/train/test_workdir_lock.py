"""One writer per workdir (issue 20, item 1): a second run is refused naming the holder; a lock left by
a killed run is taken over. The holder is a separate process, as a second `python -m jaxssl.main` is."""
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from configs import simclr_cifar10
from jaxssl.train import lock, loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_HOLD = "import sys, time; from jaxssl.train import lock; lock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(300)"


def _holder(workdir):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_and_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    proc = _holder(workdir)
    try:
        config = simclr_cifar10.get_config("runlocal")
        with pytest.raises(lock.WorkdirLockedError) as e:
            loop.train(config, workdir)  # refused before anything is written or compiled
        msg = str(e.value)
        assert f"in use by another run (PID {proc.pid} on host {socket.gethostname()}, started " in msg, msg
        assert "use another --workdir" in msg
        assert sorted(os.listdir(workdir)) == ["lock"]  # no config.json, metrics or checkpoints written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The kernel dropped the killed holder's lock; the file still names it, so the takeover is reported.
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.lock"):
        held = lock.acquire(workdir)
    assert f"ended without releasing it (PID {proc.pid} on host" in caplog.text
    assert open(os.path.join(workdir, "lock")).read().split()[0] == str(os.getpid())
    with pytest.raises(lock.WorkdirLockedError, match=f"PID {os.getpid()} "):
        lock.acquire(workdir)  # a second open file description conflicts, even in one process
    held.release()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jaxssl.train.lock"):
        lock.acquire(workdir).release()  # a clean release leaves nothing to take over
    assert "ended without releasing" not in caplog.text


def test_train_releases_the_lock_when_it_fails(tmp_path):
    workdir = str(tmp_path / "run")
    config = simclr_cifar10.get_config("runlocal")
    config.data.data_dir, config.data.prepare_offline = str(tmp_path / "no_data"), False
    with pytest.raises(Exception) as e:
        loop.train(config, workdir)  # fails in setup: no dataset
    assert not isinstance(e.value, lock.WorkdirLockedError)
    lock.acquire(workdir).release()
