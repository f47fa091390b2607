"""The build's clone without a server: a real git repository made here, served over HTTP with
Basic auth on loopback (``git http-backend`` behind http.server), and the environment and argv
the clone gives git. The build command's container is tested in tests/test_build.py."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cairn.errors import NotFound, PermanentError
from cairn.images.credentials import Credentials
from cairn.tasks import build as tasks

LOGIN = Credentials("builder", "tok-3f9a1c77e2")


def git_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hi')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "app.py"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


class GitServer:
    """``git http-backend`` (git's own smart HTTP CGI) behind Basic auth, on 127.0.0.1, serving
    the repositories under ``root``; ``seen`` records each request's Authorization header."""

    def __init__(self, root: Path, login: Credentials) -> None:
        self.root, self.expected = root, f"Basic {login.basic()}"
        self.seen: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                auth = self.headers.get("Authorization")
                server.seen.append(auth)
                if auth != server.expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(server.root), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "builder",
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
                status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
                self.send_response(status)
                for k, v in headers:
                    if k.lower() != "status":
                        self.send_header(k, v.strip())
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> GitServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[GitServer, str]]:
    git_repo(tmp_path)
    with GitServer(tmp_path, LOGIN) as server:
        yield server, f"{server.url}/repo"


def test_the_credential_reaches_git_only_as_a_header_for_the_repository(served: tuple[GitServer, str], tmp_path: Path) -> None:
    server, url = served
    done = tasks.checkout(url, "main", tmp_path / "ws", LOGIN)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "repo", capture_output=True, text=True).stdout.strip()
    assert done["commit"] == commit
    assert server.seen and set(server.seen) == {server.expected}, "every request carried the header, from the first"
    checkout = tasks.checkout_dir(tmp_path / "ws")
    kept = "".join(p.read_text(errors="replace") for p in (checkout / ".git").rglob("*") if p.is_file() and p.stat().st_size < 1 << 20)
    assert LOGIN.password not in kept and LOGIN.basic() not in kept, "the checkout (the build's own files) holds no credential"

    argv = tasks.fetch_argv(url, "main")
    env = tasks.git_env(tmp_path / "ws", url, LOGIN)
    assert not [a for a in argv if any(m in a for m in tasks.masks(LOGIN))], "argv, readable by every user, holds no credential"
    assert env["GIT_CONFIG_KEY_0"] == f"http.{url}.extraHeader", "scoped to the repository's URL: a redirect elsewhere gets nothing"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {LOGIN.basic()}"


@pytest.mark.parametrize("login, hint", [
    pytest.param(None, "name a secret holding a login in source.credentials_secret",
                 id="a private repository without credentials is refused with the field to set"),
    pytest.param(Credentials("builder", "wrong-password"), "put a valid login in the secret",
                 id="a wrong credential is refused without echoing it"),
])
def test_refused_credentials_are_named_not_quoted(served: tuple[GitServer, str], tmp_path: Path,
                                                  login: Credentials | None, hint: str) -> None:
    _, url = served
    with pytest.raises(PermanentError, match="refused the credentials") as info:
        tasks.checkout(url, "main", tmp_path / "ws", login)
    assert hint in (info.value.hint or "")
    assert "wrong-password" not in str(info.value) and LOGIN.password not in str(info.value)


def test_missing_refs_and_repositories_are_not_found(tmp_path: Path) -> None:
    repo = git_repo(tmp_path)
    with pytest.raises(NotFound, match="ref 'nope' does not exist"):
        tasks.checkout(f"file://{repo}", "nope", tmp_path / "ws-a")
    with pytest.raises(NotFound, match="no git repository"):
        tasks.checkout(f"file://{tmp_path}/missing", "main", tmp_path / "ws-b")


def test_masks_cover_every_spelling_of_the_credential() -> None:
    shown = f"user {LOGIN.username}:{LOGIN.password} header Basic {LOGIN.basic()} token {LOGIN.password}"
    assert tasks.redact(shown, tasks.masks(LOGIN)) == "user *** header Basic *** token ***"
