"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on a free local port, owned by a
non-root user (the server refuses to run as root), removed at the end.

Without the server binaries the tests that need it skip, saying how to install them; under CI
(``NBTL_CI=1``, set by ``.ci/run``) a missing server is a failure, not a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "nobody"  # who runs the server when the tests run as root


def server_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def missing(reason: str) -> None:
    """Skip locally; fail under CI, where the server must be there."""
    if os.environ.get("NBTL_CI") == "1":
        pytest.fail(f"NBTL_CI=1 and {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    root: Path
    bin: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://nbtl@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        _run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "nbtl",
              name], self.root)
        return self.url(name)

    def stop(self) -> None:
        _run([str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
              "-w", "stop"], self.root, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Server:
    """A new server; skips (fails under CI) when the binaries or the driver are missing."""
    binaries = server_binaries()
    if binaries is None:
        missing("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        missing("no PostgreSQL driver: pip install psycopg2-binary (the 'test' extra)")
    root = Path(tempfile.mkdtemp(prefix="nbtl-pg-"))
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    data = root / "data"
    _run([str(binaries / "initdb"), "-D", str(data), "-U", "nbtl", "-A", "trust", "-E", "UTF8",
          "--no-sync"], root)
    _run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
          "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off",
          "start"], root)
    return Server(root, binaries, port)


def _run(command: list[str], cwd: Path, check: bool = True) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", USER, "--", *command]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
