"""`ambry cp`: copies to, from and between named blobs, one file or a directory tree.

Owns the ``cp`` command's arguments and the copier: planning a recursive copy (a local walk
or one listing of the remote directory), skipping unchanged files (``--skip-existing``: same
size), names that cannot be local paths, and the progress bar and summary of a tree. The bytes
move through the SDK (uploads, verified downloads, a reader feeding a named put).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import click

from ambry.cli.args import Conn, conn_options
from ambry.cli.bulk import for_each, has_names, names_under
from ambry.cli.output import (
    EXIT_CODES_HELP,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Command,
    Failure,
    failure_of,
    human_size,
    report_failures,
    run,
    usage_error,
)
from ambry.common.location import SCHEME, Location, guess_content_type, parse_location

__all__ = ["cp"]

@click.command("cp", cls=Command, epilog=EXIT_CODES_HELP)
@click.argument("src")
@click.argument("dst")
@click.option("-r", "--recursive", is_flag=True,
              help="Copy a directory tree: the contents of SRC go into DST (as "
                   "aws s3 cp --recursive).")
@click.option("--skip-existing", is_flag=True,
              help="Skip a file whose destination already exists with the same size.")
@click.option("-j", "--jobs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Files in flight at once (each large file also moves in parallel parts).")
@conn_options
def cp(src: str, dst: str, recursive: bool, skip_existing: bool, jobs: int,
       conn: Conn) -> None:
    """Copy files to, from or between named blobs; the remote side is written
    ambry://ACCOUNT/CONTAINER/PATH. A destination ending in / is a directory. Uploads
    overwrite existing names; downloads create missing directories.

    \b
      ambry cp model.pt ambry://default/models/runs/42/
      ambry cp -r ./checkpoint ambry://default/models/run42/
      ambry cp -r --skip-existing ambry://default/models/run42/ ./checkpoint
      ambry cp ambry://default/models/run42/model.pt ambry://default/models/best.pt
    """
    s_remote, d_remote = src.startswith(SCHEME), dst.startswith(SCHEME)
    if not s_remote and not d_remote:
        raise usage_error("one side must be ambry://<account>/<container>/<path> (use cp(1) "
                     "for local copies)")
    try:
        s = parse_location(src) if s_remote else src
        d = parse_location(dst) if d_remote else dst
    except ValueError as e:
        raise usage_error(str(e)) from None
    if not recursive:
        if isinstance(s, str) and os.path.isdir(s):
            raise usage_error(f"{src} is a directory: use -r")
        if isinstance(s, Location) and not s.name.strip("/"):
            raise usage_error(f"{src} is a container: use -r")
    elif isinstance(s, str) and not os.path.isdir(s):
        raise usage_error(f"{src} is not a directory")
    if isinstance(s, str) and not os.path.exists(s):
        raise usage_error(f"{src}: no such file or directory")
    run(_Copier(conn, skip_existing, jobs).run(s, d, recursive))


class _Copier:
    def __init__(self, conn: Conn, skip_existing: bool, jobs: int) -> None:
        self.conn = conn
        self.skip_existing = skip_existing
        self.jobs = jobs
        self.copied = 0
        self.skipped = 0
        self.bytes = 0
        self.bar: Any = None
        #: name -> size under the destination of a recursive upload (--skip-existing)
        self.remote_sizes: dict[str, int] | None = None

    async def run(self, s: str | Location, d: str | Location, recursive: bool) -> None:
        async with self.conn.client() as self.c:
            if not recursive:
                await self._one(s, d)
                return
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="cp",
                            disable=(None if self.conn.progress is None
                                     else not self.conn.progress), dynamic_ncols=True)
            try:
                pairs, total = await self._plan(s, d)
                self.bar.total = total
                failures = await for_each(pairs, self._pair, self.jobs)
            finally:
                self.bar.close()
            click.echo(f"copied {self.copied} files ({human_size(self.bytes)})"
                       + (f", skipped {self.skipped} unchanged" if self.skip_existing else ""),
                       err=True)
            report_failures(failures, lambda p: _show_path(p[0]))
            if not pairs:
                raise Failure(EXIT_NOT_FOUND, f"nothing to copy under {_show_path(s)}")

    # one file: destinations ending in "/" (or local directories) keep the source's name
    async def _one(self, s: str | Location, d: str | Location) -> None:
        base = PurePosixPath(s.name).name if isinstance(s, Location) else Path(s).name
        if isinstance(d, Location):
            if not d.name or d.name.endswith("/"):
                d = d.with_name(d.name + base)
        elif d.endswith(("/", os.sep)) or os.path.isdir(d):
            d = os.path.join(d, base)
        size = None
        if isinstance(s, Location):
            try:
                info = await self.c.head_named(s.name, account=s.account,
                                               container=s.container)
            except Exception as e:
                if await has_names(self.c, s.with_name(s.name.rstrip("/") + "/")):
                    raise Failure(EXIT_USAGE, f"{s} is a directory: use -r") from e
                raise failure_of(e, str(s)) from e
            size = info.size
        await self._pair((s, d, size))

    async def _plan(self, s: str | Location, d: str | Location
                    ) -> tuple[list[tuple[str | Location, str | Location, int | None]], int]:
        """Every (source, destination, size) of a recursive copy, and the bytes in all."""
        pairs: list[tuple[str | Location, str | Location, int | None]] = []
        if isinstance(s, str):
            if self.skip_existing and isinstance(d, Location):
                self.remote_sizes = {e.name: e.size async for e in names_under(self.c, d)}
            root = Path(s)
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = Path(dirpath) / fn
                    rel = p.relative_to(root).as_posix()
                    pairs.append((str(p), _join(d, rel), p.stat().st_size))
        else:
            base = s.name.rstrip("/")
            async for e in names_under(self.c, s):
                rel = e.name[len(base):].lstrip("/") if base else e.name
                if not rel:  # the directory's own name is a file too: keep its name
                    rel = PurePosixPath(e.name).name
                if not _safe_rel(rel):
                    click.echo(f"ambry: warning: skipped {s.with_name(e.name)}: the name "
                               f"cannot be a local path", err=True)
                    continue
                pairs.append((s.with_name(e.name), _join(d, rel), e.size))
        return pairs, sum(p[2] or 0 for p in pairs)

    async def _pair(self, pair: tuple[str | Location, str | Location, int | None]) -> None:
        s, d, size = pair
        single = self.bar is None
        progress = self.conn.progress if single else False
        if self.skip_existing and size is not None and await self._same_size(d, size):
            self.skipped += 1
            self._advance(size)
            return
        c = self.c
        if isinstance(s, str) and isinstance(d, Location):
            await c.put_named(d.name, s, upsert=True, content_type=guess_content_type(s),
                              account=d.account, container=d.container, progress=progress)
        elif isinstance(s, Location) and isinstance(d, str):
            Path(d).parent.mkdir(parents=True, exist_ok=True)
            info = await c.download_named(s.name, d, account=s.account, container=s.container,
                                          progress=progress)
            size = info.size
        elif isinstance(s, Location) and isinstance(d, Location):
            async with await c.open_named(s.name, account=s.account,
                                          container=s.container) as reader:
                i = reader.info
                await c.put_named(d.name, reader, upsert=True, content_type=i.content_type,
                                  user_metadata=dict(i.user_metadata),
                                  owner_id=i.owner_id or None, filename=i.filename or None,
                                  account=d.account, container=d.container, progress=progress)
                size = i.size
        self.copied += 1
        self.bytes += size or 0
        self._advance(size or 0)

    def _advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(f"{self.copied} copied, {self.skipped} skipped",
                                     refresh=False)

    async def _same_size(self, d: str | Location, size: int) -> bool:
        if isinstance(d, str):
            try:
                return os.stat(d).st_size == size
            except OSError:
                return False
        if self.remote_sizes is not None:
            return self.remote_sizes.get(d.name) == size
        from ambry.client import ApiError

        try:
            info = await self.c.head_named(d.name, account=d.account, container=d.container)
        except ApiError:
            return False
        return info.size == size


def _join(d: str | Location, rel: str) -> str | Location:
    if isinstance(d, Location):
        base = d.name.rstrip("/")
        return d.with_name(f"{base}/{rel}" if base else rel)
    return os.path.join(d, *rel.split("/"))


def _safe_rel(rel: str) -> bool:
    """Whether a name, relative to the directory copied, is a path inside the destination
    (no "..", no empty or absolute parts)."""
    parts = rel.split("/")
    return all(p not in ("", ".", "..") and "\0" not in p for p in parts) and \
        not os.path.isabs(rel)


def _show_path(p: str | Location) -> str:
    return str(p)
