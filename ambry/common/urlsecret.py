"""The signed-URL secret: the rules it must meet and where a frontend finds it.

Owns the check of a secret (long enough, not a known placeholder), and finding the secret of
a config: ``AMBRY_SIGNED_URL_SECRET`` in the environment, else ``frontend.signed_url_secret``,
else the file ``frontend.signed_url_secret_file`` (relative to the data root), created with a
random secret on first use when ``frontend.signed_url_secret_generate`` is set (development
configs only). Does not own signing (``ambry.frontend.signing``).

Why it matters: a signed URL is as strong as its key. The schema's default used to be
``change-me``, accepted silently, so on every cluster that kept it anyone could sign a URL.
See docs/security.md, "Blob ids and secrets".
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from ambry.common.errors import InvalidArgument

__all__ = [
    "ENV_VAR",
    "MIN_SECRET_CHARS",
    "check_secret",
    "generate_secret",
    "read_or_create_secret_file",
    "resolve_secret",
]

#: Overrides the config (containers: docker-compose passes it to each frontend).
ENV_VAR = "AMBRY_SIGNED_URL_SECRET"
#: 32 characters: at least 192 bits even for a hex or base64 secret (HMAC-SHA256 keys).
MIN_SECRET_CHARS = 32
#: Values that shipped, or that people type, as "fill me in".
_PLACEHOLDERS = frozenset({
    "change-me", "changeme", "change_me", "change-me-please", "secret", "password",
    "local-development-secret", "ambry", "default", "test", "xxx",
})
_HOW = ("use a random one, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        " (see docs/security.md, \"Blob ids and secrets\")")


def check_secret(value: str, where: str) -> None:
    """Raise :class:`InvalidArgument` naming ``where`` if ``value`` is a placeholder or
    shorter than :data:`MIN_SECRET_CHARS`."""
    low = value.strip().lower()
    if low in _PLACEHOLDERS or low.startswith(("change-me", "changeme", "change_me")):
        raise InvalidArgument(f"{where} is the placeholder {value.strip()!r}: anyone could "
                              f"forge signed URLs with it; {_HOW}")
    if len(value) < MIN_SECRET_CHARS:
        raise InvalidArgument(f"{where} is {len(value)} characters: a signed-URL secret needs "
                              f"at least {MIN_SECRET_CHARS}; {_HOW}")
    if len(set(value)) < 8:
        raise InvalidArgument(f"{where} repeats too few characters to be a random secret; "
                              f"{_HOW}")


def generate_secret() -> str:
    """A fresh secret from the OS's CSPRNG (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def read_or_create_secret_file(path: Path, *, create: bool) -> str:
    """The secret kept in ``path`` (surrounding whitespace stripped). With ``create``, a
    missing file is first published atomically with a random secret, readable by its owner
    only: written to a temporary file, fsynced, then linked into place, so two processes
    starting at once agree on one secret (the second link fails and it reads the first)."""
    where = f"signed-URL secret file {path}"
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (generate_secret() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process published one first: use it
        finally:
            os.unlink(tmp)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InvalidArgument(f"{where} does not exist (frontend.signed_url_secret_file); "
                              f"create it with a random secret, or set "
                              f"frontend.signed_url_secret_generate: true for a development "
                              f"cluster") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"{where} cannot be read: {e}") from None
    check_secret(value, where)
    return value


def resolve_secret(secret: str, secret_file: str, generate: bool, data_root: Path,
                   environ: Mapping[str, str] = os.environ) -> str:
    """The secret a frontend signs with, from the environment, the config or the file (in
    that order); every source is checked. Raises :class:`InvalidArgument` when none is set:
    a frontend must not start with a guessable key."""
    from_env = environ.get(ENV_VAR)
    if from_env:
        check_secret(from_env, f"${ENV_VAR}")
        return from_env
    if secret:
        check_secret(secret, "frontend.signed_url_secret")
        return secret
    if secret_file:
        path = Path(secret_file)
        if not path.is_absolute():
            path = data_root / path
        return read_or_create_secret_file(path, create=generate)
    raise InvalidArgument(f"no signed-URL secret: set frontend.signed_url_secret_file (a file "
                          f"holding it), frontend.signed_url_secret, or ${ENV_VAR}; {_HOW}")
