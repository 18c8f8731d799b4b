"""A real IMAP server for tests: Debian's Dovecot on 127.0.0.1, with a generated config.

    from tests.imap_server import DovecotServer

    with DovecotServer(tmp_path) as imap:
        imap.append(raw_bytes)                  # APPEND a message to INBOX
        env = imap.env("tls")                   # IMAP_* settings for load_settings
        ...

One passwd-file user (:data:`USERNAME` / :data:`PASSWORD`), a maildir under a
fresh directory, and three listeners: plain IMAP (for ``IMAP_SECURITY=none`` and
``starttls``) and implicit TLS (``tls``), with a certificate made by the test's
own throwaway CA (:func:`tests.smtp_server.make_tls_files`).

Dovecot runs in the foreground (``dovecot -F``) and is stopped with SIGTERM (then
SIGKILL, bounded). Run as root (CI), its internal and login processes use
Debian's ``dovecot`` and ``dovenull`` users and mail is owned by ``nobody``, so
the data directory is made world-traversable; run as an ordinary user, every
process is that user (Dovecot's "rootless" mode). The authentication penalty (which delays
every login from an address after one failed) is off, so the wrong-password test does not
slow the rest. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from tests.smtp_server import make_tls_files

HOST = "127.0.0.1"
USERNAME = "editor"
PASSWORD = "imap-test-password-41c7"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
START_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _users() -> tuple[str, str, str, pwd.struct_passwd]:
    """(internal user, its group, login user, mail owner) for the current privileges."""
    if os.geteuid() == 0:
        return "dovecot", "dovecot", "dovenull", pwd.getpwnam("nobody")
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, grp.getgrgid(os.getegid()).gr_name, me.pw_name, me


class DovecotServer:
    """Dovecot with one user and one maildir; a context manager that always stops it."""

    def __init__(self, tmp_path: Path):
        self.tls = make_tls_files(Path(tmp_path) / "imap-tls")
        self.dir = Path(tempfile.mkdtemp(prefix="nl-dovecot-"))  # short path: unix sockets live here
        self.port, self.tls_port = _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def _config(self) -> Path:
        internal, group, login, mail = _users()
        home = self.dir / "home"
        home.mkdir()
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            os.chown(home, mail.pw_uid, mail.pw_gid)
        (self.dir / "passwd").write_text(f"{USERNAME}:{{PLAIN}}{PASSWORD}::::::\n")
        conf = self.dir / "dovecot.conf"
        conf.write_text(f"""
protocols = imap
listen = {HOST}
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
instance_name = nl-test-{self.port}
default_internal_user = {internal}
default_internal_group = {group}
default_login_user = {login}
first_valid_uid = {mail.pw_uid}
last_valid_uid = {mail.pw_uid}
first_valid_gid = {mail.pw_gid}
ssl = yes
ssl_cert = <{self.tls.cert_file}
ssl_key = <{self.tls.key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail.pw_uid} gid={mail.pw_gid} home={home}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.tls_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  chroot =
}}
""")
        os.chmod(self.tls.key_file, 0o644)  # the config is read by the master, the key by login processes
        return conf

    def start(self) -> "DovecotServer":
        conf = self._config()
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                log = self.log()
                self.stop()
                raise RuntimeError(f"dovecot exited: {out}\n{log}")
            try:
                imaplib.IMAP4(HOST, self.port, timeout=1).logout()
                with socket.create_connection((HOST, self.tls_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        log = self.log()
        self.stop()
        raise RuntimeError(f"dovecot did not listen within {START_TIMEOUT}s\n{log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DovecotServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- what a test does ---------------------------------------------------------------
    def env(self, security: str = "none", folder: str = "INBOX", **extra: str) -> dict[str, str]:
        """IMAP_* settings that reach this server with ``security`` (tls, starttls, none)."""
        env = {"IMAP_HOST": HOST, "IMAP_PORT": str(self.tls_port if security == "tls" else self.port),
               "IMAP_USERNAME": USERNAME, "IMAP_PASSWORD": PASSWORD, "IMAP_SECURITY": security,
               "IMAP_CA_FILE": str(self.tls.ca_file), "IMAP_FOLDER": folder}
        env.update(extra)
        return env

    def create(self, folder: str) -> None:
        c = self.client()
        try:
            typ, data = c.create(f'"{folder}"')
            assert typ == "OK", data
        finally:
            c.logout()

    def client(self) -> imaplib.IMAP4:
        c = imaplib.IMAP4(HOST, self.port, timeout=10)
        c.login(USERNAME, PASSWORD)
        return c

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        c = self.client()
        try:
            for raw in messages:
                typ, data = c.append(folder, "", None, raw)
                assert typ == "OK", data
        finally:
            c.logout()

    def count(self, folder: str = "INBOX") -> int:
        c = self.client()
        try:
            typ, data = c.select(folder, readonly=True)
            assert typ == "OK", data
            return int(data[0])
        finally:
            c.logout()

    def seen_flags(self, folder: str = "INBOX") -> list[bool]:
        """Whether each message carries \\Seen (a read-only reader must set none)."""
        c = self.client()
        try:
            c.select(folder, readonly=True)
            typ, data = c.fetch("1:*", "(FLAGS)")
            return [b"\\Seen" in item for item in data if isinstance(item, bytes)]
        finally:
            c.logout()


def ssl_context_for(server: DovecotServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.tls.ca_file))


class Mailbox:
    """One folder of a shared server, so tests sharing a Dovecot never see each other's mail."""

    def __init__(self, server: DovecotServer, folder: str):
        self.server, self.folder = server, folder
        server.create(folder)

    def env(self, security: str = "none", **extra: str) -> dict[str, str]:
        return self.server.env(security, folder=self.folder, **extra)

    def append(self, *messages: bytes) -> None:
        self.server.append(*messages, folder=self.folder)

    def count(self, folder: str | None = None) -> int:
        return self.server.count(folder or self.folder)

    def seen_flags(self) -> list[bool]:
        return self.server.seen_flags(self.folder)
