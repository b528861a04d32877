"""Teacher backends by spec string: ``openai:MODEL``, ``hf:MODEL_OR_PATH``, ``replay:NAME_OR_PATH``.

Each backend is one module implementing :class:`ftcot.teach.records.Teacher`,
imported only when asked for, so the heavy ones (torch for ``hf:``) cost
nothing to a user of the others.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftcot.api_replies import url_secrets
from ftcot.errors import FtcotError
from ftcot.teach.records import Teacher

SCHEMES = ("openai", "hf", "replay")
_OPENAI_ONLY = ("extra_body", "server_concurrency", "system", "prefill")
# Bare names that mean a built-in local model.
ALIASES = {"gemma-270m": "hf:gemma-270m", "smollm2-135m": "hf:smollm2-135m"}


def make_teacher(spec: str, *, base_url: str | Sequence[str] | None = None, api_key_env: str | None = None,
                 chat: bool = False, data_root: Path | None = None, **opts: Any) -> Teacher:
    """A teacher from its spec; an unknown scheme is a one-line error listing the valid ones."""
    spec = ALIASES.get(spec, spec)
    scheme, sep, target = spec.partition(":")
    if not sep or not target or scheme not in SCHEMES:
        raise FtcotError(f"Unknown teacher '{spec}'. Valid: openai:MODEL, hf:MODEL_OR_PATH, "
                         f"replay:NAME_OR_PATH, or the alias {', '.join(ALIASES)}.")
    if scheme != "openai" and (base_url or api_key_env or chat or any(opts.get(k) for k in _OPENAI_ONLY)):
        raise FtcotError(f"--base-url, --api-key-env, --chat, --extra-body, --server-concurrency and "
                         f"--system-prompt apply to openai: teachers, not '{spec}'.")
    if scheme == "openai":
        from ftcot.teach.backends.openai_compat import OpenAICompatTeacher

        kwargs: dict[str, Any] = dict({k: v for k, v in opts.items() if v is not None}, chat=chat)
        if base_url:
            kwargs["base_url"] = base_url
        if api_key_env:
            kwargs["api_key_env"] = api_key_env
        return OpenAICompatTeacher(target, **kwargs)
    opts = {k: v for k, v in opts.items() if k not in _OPENAI_ONLY}  # unset (None) here, checked above
    if scheme == "hf":
        from ftcot.teach.backends.hf import HFTeacher

        return HFTeacher(target, **opts)
    from ftcot.teach.backends.replay import ReplayTeacher

    if opts:
        raise FtcotError(f"replay: teachers take no options (got {', '.join(sorted(opts))}).")
    return ReplayTeacher(target, data_root=data_root)


def require_credentials(teacher: Teacher) -> None:
    """Before the first request: a one-line error if the backend lacks what sending needs (an API key).

    Backends are built without it (a dry run, ``ftcot run --plan`` send nothing and need no key)."""
    check = getattr(teacher, "require_credentials", None)
    if check is not None:
        check()


def teacher_secrets(spec: str, api_key_env: str | None = None,
                    base_url: str | Sequence[str] | None = None) -> list[str]:
    """What messages about an openai: teacher must never show: its API key and its URLs' credentials."""
    if ALIASES.get(spec, spec).partition(":")[0] != "openai":
        return []
    key = os.environ.get(api_key_env or "OPENAI_API_KEY")
    urls = [base_url] if isinstance(base_url, str) or base_url is None else list(base_url)
    return ([key] if key else []) + [secret for url in urls for secret in url_secrets(url)]
