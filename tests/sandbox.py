"""Run a stage in a subprocess with the network blocked and, optionally, a kill point.

:func:`stage_env` writes a ``sitecustomize.py`` into a folder put first on ``PYTHONPATH``; Python
imports it at start-up in every subprocess (papermill kernels and torchrun workers too), before
the stage's own code. It does two things, each switched on by an environment variable:

* ``SANDBOX_NET_LOG``: ``socket.connect``/``connect_ex``/``sendto`` to anything but a loopback or
  unix address, and ``getaddrinfo`` of a name other than localhost, raise ``OSError`` and are
  appended to the log file (so an attempt that the library swallowed and fell back from still
  shows). ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` are removed from the environment: the block,
  not the libraries' offline switches, must keep our code off the network.
* ``SANDBOX_KILLPOINT=module:Qual.name:n``: the n-th call of that function writes the file named by
  ``SANDBOX_KILLPOINT_MARK`` and waits there; the test then sends SIGKILL from outside. The kill
  lands at a known point inside the long loop, with no race between the stage and the test.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SITECUSTOMIZE = r'''
import os, socket, ipaddress

def _log(what):
    with open(os.environ["SANDBOX_NET_LOG"], "a") as f:
        f.write(f"{os.getpid()} {what}\n")

def _loopback(address):
    if isinstance(address, (str, bytes)):
        return True                                    # AF_UNIX path
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False

if os.environ.get("SANDBOX_NET_LOG"):
    _connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    _getaddrinfo = socket.getaddrinfo

    def _guard(sock, address, op):
        if sock.family == getattr(socket, "AF_UNIX", None) or _loopback(address):
            return
        _log(f"{op} {address!r}")
        raise OSError(101, f"network blocked by the test sandbox: {op} {address!r}")

    def connect(self, address):
        _guard(self, address, "connect")
        return _connect(self, address)

    def connect_ex(self, address):
        _guard(self, address, "connect_ex")
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        _guard(self, args[-1], "sendto")
        return _sendto(self, data, *args)

    def getaddrinfo(host, *args, **kw):
        if not _loopback((host.decode() if isinstance(host, bytes) else host, 0)):
            _log(f"getaddrinfo {host!r}")
            raise socket.gaierror(-2, f"name lookup blocked by the test sandbox: {host!r}")
        return _getaddrinfo(host, *args, **kw)

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo

if os.environ.get("SANDBOX_KILLPOINT"):
    import importlib, time
    _mod, _qual, _n = os.environ["SANDBOX_KILLPOINT"].split(":")
    _owner = importlib.import_module(_mod)
    for _p in _qual.split(".")[:-1]:
        _owner = getattr(_owner, _p)
    _name = _qual.split(".")[-1]
    _orig = getattr(_owner, _name)
    _calls = [0]

    def _killpoint(*a, **kw):
        _calls[0] += 1
        if _calls[0] == int(_n):
            with open(os.environ["SANDBOX_KILLPOINT_MARK"], "w") as f:
                f.write(str(os.getpid()))
            while True:                                 # wait here for the test's SIGKILL
                time.sleep(1)
        return _orig(*a, **kw)

    setattr(_owner, _name, _killpoint)
'''


def stage_env(tmp_path, killpoint: str | None = None) -> dict:
    """Environment for a sandboxed subprocess; ``env["SANDBOX_NET_LOG"]`` is the attempts log."""
    site = Path(tmp_path) / "sandbox_site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "SANDBOX_KILLPOINT")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)] + ([os.environ["PYTHONPATH"]]
                                                                  if os.environ.get("PYTHONPATH") else []))
    env["SANDBOX_NET_LOG"] = str(Path(tmp_path) / "net_attempts.log")
    env["TQDM_DISABLE"] = "1"
    env["OMP_NUM_THREADS"] = "1"      # 2 shared cores: one thread is ~30x faster than two fighting
    if killpoint:
        env["SANDBOX_KILLPOINT"] = killpoint
        env["SANDBOX_KILLPOINT_MARK"] = str(Path(tmp_path) / f"killpoint.{time.monotonic_ns()}")
    return env


@contextlib.contextmanager
def one_thread():
    """In-process runs with one torch thread, like the subprocesses (same sums, and much faster
    on a loaded 2-core machine)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def net_attempts(env) -> list[str]:
    p = Path(env["SANDBOX_NET_LOG"])
    return p.read_text().splitlines() if p.exists() else []


def run_stage(cmd: list[str], env: dict, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def kill_at_killpoint(cmd: list[str], env: dict, timeout=300) -> str:
    """Start ``cmd``, wait until it reaches its kill point, SIGKILL it; return its stderr so far."""
    mark = Path(env["SANDBOX_KILLPOINT_MARK"])
    log = mark.with_suffix(".stderr")
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.time() + timeout
        try:
            while not mark.exists():
                if proc.poll() is not None:
                    raise AssertionError(f"{cmd[2]} ended (code {proc.returncode}) before its kill point "
                                         f"{env['SANDBOX_KILLPOINT']}:\n{log.read_text()[-3000:]}")
                if time.time() > deadline:
                    raise AssertionError(f"kill point {env['SANDBOX_KILLPOINT']} not reached in {timeout}s")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    text = log.read_text()
    assert "Error in sitecustomize" not in text, text
    return text


def python_m(module: str, *args) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]
