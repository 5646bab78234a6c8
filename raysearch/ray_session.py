"""Starting or joining the Ray that runs a raysearch command, with Ray's token authentication on.

A local Ray (no address) is private to the run: token authentication on (Ray generates the token in
~/.ray/auth_token the first time) and every one of its servers bound to 127.0.0.1, so nobody on the
machine's network can join it and run code as the user. By default Ray binds a local cluster to the
machine's network address; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is Ray's own single-node mode (the
default on Windows and macOS), in which it uses the loopback address instead. Ray reads that variable
when it is imported, so this process's copy of the constant is switched too, and both are put back
when the run's Ray stops (a later `ray.init(address=...)` in the same process must not register a
driver that a remote cluster cannot reach).

Joining a cluster (`--address`), raysearch finds the cluster's token where Ray looks for it and checks
it against the cluster before anything runs: a missing or wrong token is one line naming where it
looked, not Ray's minute of retries.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from raysearch import worker_logs
from raysearch.config import ExperimentConfig

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# read by MLflow in the driver only (trials never talk to MLflow): kept out of a local Ray's processes
_MLFLOW_SECRETS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
_restore: list = []  # how to put back what starting a local Ray changed in this process


class RayAuthError(ConnectionError):
    """The cluster at --address refused raysearch's token (or it had none)."""


def token_sources() -> list[tuple[str, str | None]]:
    """Where Ray (and raysearch) look for the cluster token, in Ray's order: [(place, token or None)]."""
    path = os.environ.get(TOKEN_PATH_ENV)
    return [(f"${TOKEN_ENV}", os.environ.get(TOKEN_ENV) or None),
            (f"${TOKEN_PATH_ENV}" + (f" ({path})" if path else ""), _read(Path(path)) if path else None),
            (str(DEFAULT_TOKEN_FILE), _read(DEFAULT_TOKEN_FILE.expanduser()))]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _looked() -> str:
    return "; ".join(f"{place}: {'set' if token else 'not set' if place.startswith('$') else 'missing'}"
                     for place, token in token_sources())


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast when nothing listens at a host:port address (`ray.init` would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} ({err})") from None


def _check_token(address: str) -> None:
    """Ask the cluster's GCS for its id with the token Ray will send (one round trip); RayAuthError when
    it refuses. Ray's C++ client logs each refusal on stderr; the error below says it once."""
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    with _stderr_off():
        try:
            GcsClient(address=address)
        except AuthenticationError:
            raise RayAuthError(f"{address} refused raysearch's authentication token; looked "
                               f"in {_looked()}. Put the cluster's token (`ray get-auth-token` on its head) "
                               f"in one of them") from None


@contextmanager
def _stderr_off():
    """File descriptor 2 to /dev/null for the duration (C++ code writes there, not to sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def join(address: str) -> None:
    """Connect to the cluster at `address` with the token from Ray's usual places."""
    import ray

    target = address.removeprefix("ray://")
    _probe(target)
    # Ray sends a token to an explicit address only in token mode, which it turns on by itself only for
    # a cluster it finds (no address, "auto"); this is its own rule for those: token mode when
    # RAY_AUTH_MODE is unset and a token exists (a cluster without authentication accepts a client
    # that sends one). It also refreshes Ray's cached config, which read the variable at import.
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    with _quiet(_AUTH_LOGGER):
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    if not address.startswith("ray://") and address != "auto":
        _check_token(target)
    ray.init(address=address, logging_level=logging.WARNING, runtime_env=_runtime_env())


def start_local(num_cpus: int | None) -> None:
    """A private local Ray with `num_cpus` (None: the machine's), token authentication on, on 127.0.0.1."""
    import ray
    from ray._private import ray_constants

    _restore.append((_LOOPBACK_ENV, os.environ.get(_LOOPBACK_ENV), ray_constants.ENABLE_RAY_CLUSTER))
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    hidden = {k: os.environ.pop(k) for k in _MLFLOW_SECRETS if k in os.environ}
    try:
        # "local": a private Ray even when another one runs on this machine (with no address, ray.init
        # joins the newest cluster `ray start` or ray.cluster_utils left in /tmp/ray). With RAY_AUTH_MODE
        # unset Ray turns token authentication on (and warns that it did, on every run: kept off the
        # console); an explicit RAY_AUTH_MODE=disabled is Ray's own opt-out, the user's to make.
        with _quiet(_AUTH_LOGGER):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     logging_level=logging.WARNING, runtime_env=_runtime_env())
    except BaseException:
        _put_back()
        raise
    finally:
        os.environ.update(hidden)


@contextmanager
def _quiet(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _runtime_env() -> dict:
    return {"worker_process_setup_hook": worker_logs.HOOK}  # Ray's per-trial INFO lines off the console


def start_ray(config: ExperimentConfig, address: str | None) -> bool:
    """Connect to `address` (or `ray.address`), or start a local Ray with this machine's CPUs; True if we
    started or joined it (then `stop_ray` ends it), False if this process was already connected."""
    import ray

    if ray.is_initialized():
        return False
    address = address or config.ray.address
    if address:
        join(address)
    else:
        start_local(config.ray.num_cpus)
    return True


def stop_ray() -> None:
    """Disconnect (stopping a local Ray this process started) and undo what starting it changed."""
    import ray

    ray.shutdown()
    _put_back()


def _put_back() -> None:
    from ray._private import ray_constants

    while _restore:
        name, env, constant = _restore.pop()
        if env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = env
        ray_constants.ENABLE_RAY_CLUSTER = constant
