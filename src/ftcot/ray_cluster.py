"""Connecting to Ray: the one place ``ftcot run --executor ray`` and a teach run's workers get their cluster.

Ray is optional (``pip install 'ftcot[ray]'``); everything here imports it only when called.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

from ftcot.errors import FtcotError


def connect_ray(address: str | None, *, local_cpus: int | None = None, setting: str = "executor.address") -> Any:
    """Ray, connected to the cluster at ``address`` (or a new one on this machine); a one-line error if not.

    ``setting`` names where the address came from, for the error message. Inside a Ray task (a stage run by
    ``--executor ray`` that starts teach workers) Ray is already connected, and that cluster is used.
    """
    try:
        import ray
    except ImportError:
        raise FtcotError("Ray is not installed: pip install 'ftcot[ray]' (or pip install ray).") from None
    if not ray.is_initialized():
        check_reachable(address, setting)
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            # Ray's own start-up lines (INFO, its token-authentication notice) would bury ftcot's output.
            quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
            if address:
                ray.init(address=address, **quiet)
            else:
                # A cluster of this machine, for this run only.
                ray.init(num_cpus=local_cpus, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local cluster"
            raise FtcotError(f"ray: could not connect to {where} ({str(exc).splitlines()[0]}); start it with "
                             f"'ray start --head' or fix {setting}.") from None
        finally:
            # ray.init puts its own SIGTERM handler in (it aborts the process): `kill PID` must stop a run as
            # Ctrl-C does, with its results written and its archive copied, so the handler before it goes back.
            if sigterm is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, sigterm)
    return ray


def check_reachable(address: str | None, setting: str = "executor.address") -> None:
    """A HOST:PORT (or ray://HOST:PORT) nothing answers on is one line now: ray.init retries it for minutes."""
    from urllib.parse import urlsplit

    if not address or address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise FtcotError(f"{setting} '{address}': give HOST:PORT, ray://HOST:PORT or auto.")
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise FtcotError(f"{setting} {host}:{port}: no Ray cluster answers ({exc.strerror or exc}); start one "
                         f"with 'ray start --head' there, or fix {setting}.") from None
