"""A stand-in for the model hub (and ModelScope) on 127.0.0.1: the endpoints
huggingface_hub and our downloader use, for repositories held in memory.

    GET /api/models/{repo}/revision/{rev}?blobs=true   the file list with sizes, LFS sha256
                                                        (large files) and git blob ids
    GET /{repo}/resolve/{rev}/{file}                   the bytes, with HTTP Range support
    GET /api/v1/models/{repo}/repo/files?Revision=master        ModelScope's file list
    GET /api/v1/models/{repo}/repo?Revision=master&FilePath=F   ModelScope's file bytes

Controls for tests: ``served`` counts the bytes sent per file; ``drop_after[file] = n`` cuts
the connection after n bytes (once); ``hold_after[file] = n`` sends n bytes, sets ``holding``
and sends the rest only once ``go_on`` is set (once: a download that stays in flight for as
long as a test needs); ``tamper[file] = bytes`` serves other bytes than the file list
describes. ``serving`` points HF_ENDPOINT at a hub for a test.

``tiny_release`` describes a repository the hub serves as a release, and ``add_pack`` makes a
pack of such releases known to the app for one test: downloads of a few KB.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from minmo_core.common.releases import Release, parse_release
from minmo_core.manager.packs import Pack

LFS_THRESHOLD = 64  # files this large are "LFS" files (the real hub: 10 MB)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "demo/Tiny-Instruct"
TINY_LLM_SHAPE = {"layers": 2, "kv_heads": 2, "head_dim": 16, "hidden": 64,
                  "intermediate": 128, "vocab": 256, "tied": True}  # fmt: skip


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], commit: str) -> None:
        self.repos, self.commit = repos, commit
        self.served: collections.Counter[str] = collections.Counter()
        self.requests: list[str] = []
        self.drop_after: dict[str, int] = {}
        self.hold_after: dict[str, int] = {}
        self.holding, self.go_on = threading.Event(), threading.Event()
        self.tamper: dict[str, bytes] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.go_on.set()  # a held response ends, so its thread can be joined
        self.server.shutdown()
        self.server.server_close()

    def _modelscope(self, handler, path: str, query: dict) -> None:
        """ModelScope's API: /api/v1/models/{repo}/repo/files and /repo?FilePath=..."""
        rest = path[len("/api/v1/models/") :].split("/")
        repo = "/".join(rest[:2])
        if repo not in self.repos or query.get("Revision", ["master"])[0] != "master":
            return self._error(handler, 404, "NotFound", "no such model or revision")
        if rest[2:] == ["repo", "files"]:
            files = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Size": len(c), "Type": "blob",
                      "Sha256": hashlib.sha256(c).hexdigest()}
                     for n, c in self.repos[repo].items()]  # fmt: skip
            return self._send_json(handler, 200, {"Code": 200, "Data": {"Files": files},
                                                  "Success": True})  # fmt: skip
        name = query.get("FilePath", [""])[0]
        if rest[2:] != ["repo"] or name not in self.repos[repo]:
            return self._error(handler, 404, "NotFound", "no such file")
        return self._send_file(handler, name, self.tamper.get(name, self.repos[repo][name]))

    def _split(self, path: str) -> tuple[str, str, str] | None:
        """(repo, revision, file) of a resolve URL."""
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        return f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))

    def _error(self, handler, code: int, error_code: str, message: str) -> None:
        headers = {"X-Error-Code": error_code, "X-Error-Message": message}
        self._send_json(handler, code, {"error": message}, headers)

    @staticmethod
    def _send_json(handler, code: int, data: object, headers: dict | None = None) -> None:
        body = json.dumps(data).encode()
        handler.send_response(code)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path
        self.requests.append(path)
        if path.startswith("/api/v1/models/"):
            return self._modelscope(handler, path, parse_qs(parts.query))
        if path.startswith("/api/models/"):
            rest = path[len("/api/models/") :].split("/")
            repo, rev = "/".join(rest[:2]), unquote(rest[3]) if len(rest) > 3 else "main"
            if repo not in self.repos:
                return self._error(handler, 404, "RepoNotFound", "Repository not found")
            if rev not in (self.commit, "main"):
                return self._error(handler, 404, "RevisionNotFound", "Invalid rev id")
            siblings = []
            for name, content in self.repos[repo].items():
                sibling = {
                    "rfilename": name,
                    "size": len(content),
                    "blobId": git_blob_sha1(content),
                }
                if len(content) >= LFS_THRESHOLD:
                    sibling["lfs"] = {"size": len(content), "pointerSize": 134,
                                      "sha256": hashlib.sha256(content).hexdigest()}  # fmt: skip
                siblings.append(sibling)
            listing = {"id": repo, "modelId": repo, "sha": self.commit, "siblings": siblings}
            return self._send_json(handler, 200, listing)
        split = self._split(path)
        if split is None or split[0] not in self.repos or split[2] not in self.repos[split[0]]:
            return self._error(handler, 404, "EntryNotFound", "Entry not found")
        repo, rev, name = split
        if rev != self.commit:
            return self._error(handler, 404, "RevisionNotFound", "Invalid rev id")
        return self._send_file(handler, name, self.tamper.get(name, self.repos[repo][name]))

    def _send_file(self, handler, name: str, content: bytes) -> None:
        start = 0
        ranged = handler.headers.get("Range")
        if ranged and ranged.startswith("bytes="):
            start = int(ranged[len("bytes=") :].split("-")[0])
        body = content[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("X-Repo-Commit", self.commit)
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        handler.end_headers()
        cut = self.drop_after.pop(name, None)
        if cut is not None:
            handler.wfile.write(body[:cut])
            self.served[name] += len(body[:cut])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the connection is lost mid-file
            return None
        hold = self.hold_after.pop(name, None)
        if hold is not None:  # the first bytes, then a wait until the test says go on
            handler.wfile.write(body[:hold])
            self.served[name] += len(body[:hold])
            self.holding.set()
            self.go_on.wait(timeout=120)
            body = body[hold:]
        for i in range(0, len(body), 4096):  # counted as written: a client may hang up
            handler.wfile.write(body[i : i + 4096])
            self.served[name] += len(body[i : i + 4096])
        return None


@contextmanager
def serving(
    monkeypatch: pytest.MonkeyPatch, repos: dict[str, dict[str, bytes]], commit: str = COMMIT
) -> Iterator[FakeHub]:
    """A FakeHub of ``repos`` that the app's downloads and imports reach (HF_ENDPOINT)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub(repos, commit) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)  # read at call time
        yield server


def tiny_release(
    files: dict[str, bytes],
    revision: str = COMMIT,
    *,
    name: str = "Tiny-Instruct",
    repo: str = REPO,
    kind: str = "llm",
    pinned: bool = False,
    **manifest,
) -> Release:
    """A release of ``files`` as the hub serves them: unpinned like the Qwen LLMs (the hub's
    metadata is what the files must be), or ``pinned`` with their sizes and sha256 like the
    speech models. ``manifest`` adds fields (``llm``, ``parameters``, ``parts``...)."""
    entries = {
        n: {"size": len(c), "sha256": hashlib.sha256(c).hexdigest()} if pinned else {}
        for n, c in files.items()
    }
    data = {"name": name, "repo": repo, "revision": revision, "kind": kind, "files": entries}
    return parse_release({**data, **manifest}, "test")


def add_pack(monkeypatch: pytest.MonkeyPatch, name: str, releases: list[Release]) -> Pack:
    """Make ``releases`` and a pack of them known to the app (and its planner) for one test;
    the pack's LLM is its release of kind "llm"."""
    from minmo_core.common import releases as known_releases
    from minmo_core.manager import packs as known_packs

    llm = next((r.name for r in releases if r.kind == "llm"), None)
    pack = Pack(name, name.title(), f"a test pack of {len(releases)} tiny releases",
                tuple(r.name for r in releases), llm, {})  # fmt: skip
    every_release = {**known_releases.all_releases(), **{r.name: r for r in releases}}
    every_pack = {**known_packs.all_packs(), name: pack}  # last: the smallest LLM
    monkeypatch.setattr(known_releases, "_manifests", lambda: every_release)
    monkeypatch.setattr(known_packs, "_packs", lambda: every_pack)
    return pack
