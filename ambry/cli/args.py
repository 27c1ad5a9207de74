"""Reading what a user types to the ``ambry`` blob commands: blob ids and names, durations,
``key=value`` metadata, and the frontends to talk to.

Owns turning command-line text into values (a usage error, exit 1, for text that is neither),
and the options every command shares (``--endpoint``, ``--progress``) with the connection
(:class:`Conn`) they make, and the operator commands' ``--config``. Does not own what the commands do with them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ambry.cli.output import usage_error
from ambry.common.location import SCHEME, Location, endpoints_from, is_blob_id, parse_location

if TYPE_CHECKING:
    from ambry.client import AsyncClient

__all__ = ["Conn", "Target", "cluster_config_option", "conn_options", "parse_meta",
           "parse_target", "parse_ttl", "show_target"]

#: ``--config``: the cluster config file the operator commands (admin, usage, cluster) read
cluster_config_option = click.option(
    "--config", "config_path", default="config/local.yaml", show_default=True,
    envvar="AMBRY_CONFIG", show_envvar=True, type=click.Path(exists=True, dir_okay=False))

_DURATION = re.compile(r"(\d+)\s*([smhdw]?)", re.ASCII)
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ------------------------------------------------------------------ shared options
@dataclass(frozen=True)
class Conn:
    endpoints: list[str]
    progress: bool | None

    def client(self) -> AsyncClient:
        from ambry.client import AsyncClient

        return AsyncClient(self.endpoints, service_id="ambry-cli", progress=self.progress)


def conn_options(f: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("--endpoint", "-e", "endpoints", multiple=True, metavar="URL",
                  help="Frontend base URL; repeat (or comma-separate) for failover in order.")
    @click.option("--progress/--no-progress", default=None,
                  help="Progress bars on stderr [default: when stderr is a terminal].")
    @functools.wraps(f)
    def wrapper(*args: Any, endpoints: tuple[str, ...], progress: bool | None,
                **kwargs: Any) -> Any:
        return f(*args, conn=Conn(endpoints_from(list(endpoints)), progress), **kwargs)

    return wrapper


Target = str | Location


def parse_target(text: str, *, allow_prefix: bool = False) -> Target:
    """A blob id, or the :class:`Location` of a name (``ambry://`` optional)."""
    if is_blob_id(text):
        return text.removeprefix("/")
    if text.startswith(SCHEME) or "/" in text:
        try:
            loc = parse_location(text)
        except ValueError as e:
            raise usage_error(str(e)) from None
        if not allow_prefix and not loc.name.strip("/"):
            raise usage_error(f"{text!r} names a container, not a blob: "
                         f"<account>/<container>/<name>")
        return loc
    raise usage_error(f"{text!r} is neither a blob id (43 characters) nor a name "
                 f"([{SCHEME}]<account>/<container>/<name>)")


def show_target(t: Target) -> str:
    return str(t) if isinstance(t, Location) else t


def parse_ttl(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """``1d``, ``12h``, ``30m``, ``45s``, ``3600`` (seconds); ``never`` / ``-1`` = forever."""
    if value is None or value.strip().lower() in ("never", "forever", "-1"):
        return None
    m = _DURATION.fullmatch(value.strip().lower())
    if m is None:
        raise click.BadParameter(f"{value!r}: use a number of seconds or 30m, 12h, 7d, 2w, "
                                 f"or 'never'")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def parse_meta(_ctx: click.Context, _param: click.Parameter,
                value: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value:
        key, sep, v = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: use key=value")
        out[key] = v
    return out
