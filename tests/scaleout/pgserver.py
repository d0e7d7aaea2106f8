"""A real PostgreSQL server on loopback with a fresh data directory (tests and bench/).

Debian's ``postgresql`` package provides the server (``.ci/run`` installs it when it is
missing). The server refuses to run as root, so as root it runs as the ``postgres`` user.
TCP connections need a password (scram-sha-256), so the journal's secret reference is used
for real.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg

USER = "pr3dict"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: apt-get install postgresql")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        if not self.data.exists():  # a restart keeps the data directory
            done = subprocess.run(self._as_server_user([
                _binary("initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                "--no-instructions"]), check=False, capture_output=True, text=True, cwd=self.root)
            if done.returncode:
                raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        log = self.root / "server.log"
        out = open(log, "ab")
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
        self.process = subprocess.Popen(self._as_server_user([
            _binary("postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
            "-c", "max_connections=60", "-c", "shared_buffers=32MB"]),
            stdout=out, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 60  # readiness: the server accepts a connection
        while True:
            try:
                psycopg.connect(self.url("postgres"), password=self.password,
                                connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n"
                                       + log.read_text(errors="replace")) from None
                time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url("postgres"), password=self.password,
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def _signal(self, sig: int) -> None:
        """Signal the postmaster itself (as root it runs under runuser)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, sig)

    def crash(self) -> None:
        """An immediate shutdown (SIGQUIT): backends die at once, no checkpoint; the next
        start runs crash recovery, as after a power cut."""
        self._stop(signal.SIGQUIT)

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, a checkpoint is written."""
        self._stop(signal.SIGINT)

    def _stop(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self._signal(sig)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def open_root(root: Path) -> None:
    """Let the server's user reach ``root`` (made by root, 0700 parents)."""
    os.chmod(root, 0o755)
    for parent in root.parents:
        if str(parent) == "/":
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o005)
