"""A throw-away PostgreSQL server for tests and benchmarks of the search storage (not part of the public API).

``PgServer.start()`` finds ``initdb`` / ``pg_ctl`` (``PATH``, then ``/usr/lib/postgresql/*/bin``, newest first),
makes a cluster in a fresh folder under the system temp dir, starts it on a free loopback port with its unix
socket in that folder, creates a database and gives its ``postgresql://`` URL; ``stop()`` stops it and deletes
the folder. PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user (created
with ``useradd`` only when ``$CI`` is set) and the server commands run through ``runuser`` (or ``su``).
Anything that keeps a server from starting raises :class:`PgUnavailable` with the reason in one line.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PgServer", "PgUnavailable", "find_pg_bin"]

DB = "lightnn_test"
USER = "lightnn"


class PgUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (the message says why)."""


def find_pg_bin(name: str) -> str | None:
    """The path of PostgreSQL's ``name`` program, or None."""
    hit = shutil.which(name)
    if hit:
        return hit

    def version(d: str) -> tuple[int, ...]:
        v = Path(d).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as(user: str | None, argv: list[str]) -> list[str]:
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["su", user, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _server_user() -> str | None:
    """None when not root; else the unprivileged user that owns the cluster."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        if not os.environ.get("CI"):
            raise PgUnavailable("running as root and there is no 'postgres' user to run the server as "
                                "(it is created only under CI)") from None
        r = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "postgres"],
                           capture_output=True, text=True)
        if r.returncode:
            raise PgUnavailable(f"useradd postgres failed: {(r.stderr or r.stdout).strip()}") from None
    return "postgres"


class PgServer:
    def __init__(self, root: Path, data: Path, port: int, user: str | None, pg_ctl: str) -> None:
        self.root, self.data, self.port, self.user, self.pg_ctl = root, data, port, user, pg_ctl
        self.url = f"postgresql://{USER}@127.0.0.1:{port}/{DB}"

    @classmethod
    def start(cls, timeout: float = 60.0) -> "PgServer":
        initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise PgUnavailable("PostgreSQL's initdb/pg_ctl were not found on PATH or in /usr/lib/postgresql/*/bin")
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="lightnn-pg-"))
        data, log = root / "data", root / "server.log"
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        port = _free_port()
        server = cls(root, data, port, user, pg_ctl)

        def run(argv: list[str], what: str) -> None:
            try:
                r = subprocess.run(_run_as(user, argv), capture_output=True, text=True, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as e:
                server._cleanup()
                raise PgUnavailable(f"{what} failed: {e}") from None
            if r.returncode:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [f"exit code {r.returncode}"]
                if log.exists():
                    tail += log.read_text(errors="replace").strip().splitlines()[-1:]
                server._cleanup()
                raise PgUnavailable(f"{what} failed: {' / '.join(tail)}")

        run([initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"],
            "initdb")
        opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=50")
        run([pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", str(int(timeout)), "-o", opts, "start"],
            "pg_ctl start")
        try:
            import psycopg

            with psycopg.connect(f"postgresql://{USER}@127.0.0.1:{port}/postgres", autocommit=True,
                                 connect_timeout=10) as conn:
                conn.execute(f"CREATE DATABASE {DB}")
        except Exception as e:
            server.stop()
            raise PgUnavailable(f"creating database {DB} failed: {str(e).strip().splitlines()[:1]}") from None
        return server

    def stop(self) -> None:
        subprocess.run(_run_as(self.user, [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
