"""A loopback stand-in for the Hugging Face Hub, for tests that must not touch the internet.

It speaks the part of the Hub API that huggingface_hub 2.4 uses to push and to download:

* ``POST /api/repos/create``                          create a model repo (409 if it exists)
* ``POST /api/validate-yaml``                         README metadata check (YAML must parse)
* ``POST /api/models/{repo}/preupload/{rev}``         every file is "regular": no LFS / Xet upload
* ``POST /api/models/{repo}/commit/{rev}``            NDJSON commit: header + base64 files
* ``GET  /api/models/{repo}[/revision/{rev}]``        model info (sha, siblings)
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]``     file listing
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``           file download with ETag / X-Repo-Commit

Files live in memory, per repo. Every request is recorded with its Authorization
header so tests can check which token was sent. Writes need ``Bearer <token>``;
reads of public repos do not. Bodies over ``max_body`` are refused, so a runaway
client cannot fill memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "create"),
    ("POST", re.compile(r"/api/validate-yaml"), "validate_yaml"),
    ("POST", re.compile(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ("POST", re.compile(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ("GET", re.compile(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "info"),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?"), "tree"),
    ("GET", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
]


def git_blob_oid(data: bytes) -> str:
    """The id git (and the Hub's ETag for non-LFS files) gives a blob."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self, private):
        self.private = private
        self.files: dict[str, bytes] = {}
        self.commits: list[dict] = []  # {"oid", "summary", "files"}

    @property
    def sha(self):
        return self.commits[-1]["oid"] if self.commits else "0" * 40


class FakeHub:
    """Start with ``FakeHub(token).start()``; ``url`` is the endpoint; ``close()`` stops it."""

    def __init__(self, token: str, max_body: int = 64 << 20):
        self.token = token
        self.max_body = max_body
        self.repos: dict[str, _Repo] = {}
        self.requests: list[dict] = []  # {"method", "path", "auth", "body" (JSON bodies only)}
        self.lock = threading.Lock()
        self._server = None
        self._thread = None
        self.url = None

    # -- lifecycle
    def start(self):
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"  # kept after close(): a closed port is a useful endpoint too
        return self

    def close(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- what tests look at
    def auth_headers(self):
        return [r["auth"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    timeout = 30  # a stalled client cannot hold a thread forever

    def log_message(self, *args):  # keep pytest output clean
        pass

    # -- plumbing
    def _dispatch(self, method):
        path = unquote(urlsplit(self.path).path)
        auth = self.headers.get("Authorization")
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.hub.max_body:
            return self._send(413, {"error": "body too large"})
        body = self.rfile.read(length) if length else b""
        record = {"method": method, "path": path, "auth": auth}
        if body and "json" in (self.headers.get("Content-Type") or "") and "ndjson" not in self.headers.get(
            "Content-Type", ""
        ):
            record["body"] = json.loads(body)
        with self.hub.lock:
            self.hub.requests.append(record)
        for m, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if m == method and match:
                with self.hub.lock:
                    return getattr(self, "do_" + name)(method, body, auth, **match.groupdict())
        return self._send(404, {"error": f"no route {method} {path}"})

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def _send(self, status, payload=None, headers=None, raw=None, method="GET"):
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _error(self, status, code, message, method="GET"):
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message}, method=method)

    def _authorized(self, auth):
        return auth == f"Bearer {self.hub.token}"

    def _readable_repo(self, repo, auth, method="GET"):
        r = self.hub.repos.get(repo)
        if r is None or (r.private and not self._authorized(auth)):
            # The Hub answers 401 RepoNotFound for both, so private repos do not leak their existence.
            self._error(401, "RepoNotFound", "Repository not found", method)
            return None
        return r

    def _writable_repo(self, repo, auth):
        if not self._authorized(auth):
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return None
        r = self.hub.repos.get(repo)
        if r is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return r

    # -- routes
    def do_create(self, method, body, auth):
        if not self._authorized(auth):
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        req = json.loads(body)
        repo = f"{req['organization']}/{req['name']}" if req.get("organization") else f"user/{req['name']}"
        url = f"{self.hub.url}/{repo}"
        if repo in self.hub.repos:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        self.hub.repos[repo] = _Repo(private=req.get("visibility") == "private")
        return self._send(200, {"url": url, "name": repo})

    def do_validate_yaml(self, method, body, auth):
        content = json.loads(body)["content"]
        m = re.match(r"---\n(.*?)\n---", content, re.S)
        try:
            if m:
                yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": str(e)}], "warnings": []})
        return self._send(200, {"errors": [], "warnings": []})

    def do_preupload(self, method, body, auth, repo, rev):
        if self._writable_repo(repo, auth) is None:
            return
        files = json.loads(body)["files"]
        return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]})

    def do_commit(self, method, body, auth, repo, rev):
        r = self._writable_repo(repo, auth)
        if r is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return self._send(400, {"error": "commit must start with a header line"})
        new = dict(r.files)
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file":
                new[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                new.pop(value["path"], None)
            else:  # lfsFile etc.: preupload never asks for them
                return self._send(400, {"error": f"unsupported commit operation {key}"})
        oid = hashlib.sha1(json.dumps([r.sha, sorted((k, git_blob_oid(v)) for k, v in new.items())]).encode())
        oid = oid.hexdigest()
        r.files = new
        r.commits.append({"oid": oid, "summary": lines[0]["value"]["summary"],
                          "files": [i["value"]["path"] for i in lines[1:]]})
        return self._send(200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid,
                                "pullRequestUrl": None})

    def do_info(self, method, body, auth, repo, rev=None):
        r = self._readable_repo(repo, auth)
        if r is None:
            return
        return self._send(200, {
            "id": repo, "modelId": repo, "sha": r.sha, "private": r.private, "tags": [],
            "siblings": [{"rfilename": p, "size": len(d), "blobId": git_blob_oid(d)}
                         for p, d in sorted(r.files.items())],
        })

    def do_tree(self, method, body, auth, repo, rev, path=None):
        r = self._readable_repo(repo, auth)
        if r is None:
            return
        prefix = (path.strip("/") + "/") if path else ""
        entries = [{"type": "file", "path": p, "size": len(d), "oid": git_blob_oid(d)}
                   for p, d in sorted(r.files.items()) if p.startswith(prefix)]
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        return self._send(200, entries)

    def do_resolve(self, method, body, auth, repo, rev, path):
        r = self._readable_repo(repo, auth, method)
        if r is None:
            return
        if rev not in ("main", r.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", method)
        data = r.files.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"Entry not found: {path}", method)
        return self._send(200, raw=data, method=method, headers={
            "ETag": f'"{git_blob_oid(data)}"', "X-Repo-Commit": r.sha,
        })
