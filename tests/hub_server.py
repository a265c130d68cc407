"""A small Hugging Face Hub-compatible HTTP server for tests (no network beyond 127.0.0.1).

It implements the routes that `huggingface_hub` 2.4, `diffusers` and `datasets` use to push and pull
model and dataset repos (see /work/shared/design/hub-offline.md): repo creation, preupload, LFS batch and
basic-transfer upload, NDJSON commits, repo info, tree / paths-info / refs listings and `resolve`
downloads (GET and HEAD, with Range). Every commit is a full snapshot `{path: file entry}`, so old
commit shas stay resolvable. Blobs are content-addressed by sha256 under `root/blobs/`, repo metadata is a
JSON file per repo under `root/repos/`, so a standalone server keeps its repos across restarts.

Any request the server does not understand is answered 404/501 *and* logged at ERROR level and recorded in
`HubServer.unhandled`, so that a client feature the server lacks shows up loudly instead of as a mysterious
client-side failure.

Client processes must get the endpoint through the environment before importing `huggingface_hub`,
`diffusers` or `datasets` (they read `HF_ENDPOINT` at import time): use `hub_env` and `run_python`.

Example:
    ```py
    server = HubServer(tmp_path / "hub").start()
    run_python("from huggingface_hub import HfApi; HfApi().create_repo('org/x')", hub_env(server.url, tmp_path / "hf"))
    server.stop()
    ```
"""

import argparse
import base64
import copy
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
# Files the real Hub stores in LFS through its default .gitattributes (a subset), plus anything > 1 MB.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".parquet", ".arrow", ".npy", ".npz",
                ".h5", ".onnx", ".msgpack", ".png", ".jpg", ".jpeg", ".webp", ".zip", ".gz", ".tar")
LFS_MIN_SIZE = 1_000_000
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    # The client parses exactly '%Y-%m-%dT%H:%M:%S.%fZ'.
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answered with the Hub's `X-Error-Code` convention."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubStore:
    """Repos, commits and blobs on disk. All methods are thread-safe (one lock; tests are small)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], dict] = {}
        for meta in (self.root / "repos").glob("*/**/repo.json"):
            repo = json.loads(meta.read_text())
            self.repos[(repo["type"], repo["id"])] = repo

    # -- blobs --------------------------------------------------------------------------------------
    def put_blob(self, content: bytes) -> str:
        sha256 = hashlib.sha256(content).hexdigest()
        path = self.root / "blobs" / sha256
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha256

    def has_blob(self, sha256: str) -> bool:
        return (self.root / "blobs" / sha256).is_file()

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    # -- repos --------------------------------------------------------------------------------------
    def _save(self, repo: dict) -> None:
        path = self.root / "repos" / repo["type"] / repo["id"] / "repo.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(repo))
        path.with_suffix(".tmp").replace(path)

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create a repo with an initial `.gitattributes` commit (like the Hub). False if it existed."""
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                return False
            repo = {"type": repo_type, "id": repo_id, "private": private, "createdAt": _now(),
                    "refs": {}, "commits": {}}
            self.repos[(repo_type, repo_id)] = repo
            self._commit(repo, "main", {"summary": "initial commit"},
                         [("file", {"path": ".gitattributes", "content": GITATTRIBUTES})])
            return True

    def resolve_revision(self, repo: dict, revision: str) -> str:
        with self.lock:
            if revision in repo["refs"]:
                return repo["refs"][revision]
            if HEX40.match(revision) and revision in repo["commits"]:
                return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files(self, repo: dict, revision: str) -> tuple[str, dict]:
        """(commit sha, {path: entry}) of a revision; a commit's file dict is never mutated afterwards."""
        with self.lock:
            sha = self.resolve_revision(repo, revision)
            return sha, repo["commits"][sha]["files"]

    def create_branch(self, repo: dict, branch: str, starting_point: str | None) -> None:
        with self.lock:
            if branch in repo["refs"]:
                raise HubError(409, f"Branch {branch} already exists")
            repo["refs"][branch] = self.resolve_revision(repo, starting_point or "main")
            self._save(repo)

    def commit(self, repo: dict, branch: str, header: dict, operations: list[tuple[str, dict]]) -> str:
        with self.lock:
            if branch not in repo["refs"]:
                raise HubError(404, f"Invalid rev id: {branch} (commits go to an existing branch)",
                               "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent is not None and parent != repo["refs"][branch]:
                raise HubError(412, f"parentCommit {parent} is not the head of {branch}")
            return self._commit(repo, branch, header, operations)

    def _commit(self, repo: dict, branch: str, header: dict, operations: list[tuple[str, dict]]) -> str:
        parent = repo["refs"].get(branch)
        files = copy.deepcopy(repo["commits"][parent]["files"]) if parent else {}
        for key, value in operations:
            path = value["path"].strip("/")
            if key == "file":
                content = value["content"]
                files[path] = {"sha256": self.put_blob(content), "size": len(content), "lfs": False,
                               "oid": _git_blob_oid(content)}
            elif key == "lfsFile":
                oid, size = value["oid"], value["size"]
                if not self.has_blob(oid):
                    raise HubError(400, f"lfsFile {path}: object {oid} was never uploaded through the LFS batch API")
                files[path] = {"sha256": oid, "size": size, "lfs": True,
                               "oid": _git_blob_oid(_lfs_pointer(oid, size))}
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"deletedFile {path}: no such file", "EntryNotFound")
            elif key == "deletedFolder":
                for name in [n for n in files if n.startswith(path + "/")]:
                    del files[name]
            else:
                raise HubError(400, f"Unsupported commit operation {key!r}")
        seed = json.dumps([parent, files, header, time.time_ns(), os.urandom(8).hex()], sort_keys=True)
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo["commits"][sha] = {"parent": parent, "files": files, "date": _now(),
                                "title": header.get("summary", ""), "message": header.get("description", "")}
        repo["refs"][branch] = sha
        self._save(repo)
        return sha


def _entry_info(path: str, entry: dict) -> dict:
    info = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
    if entry["lfs"]:
        info["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                       "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
    return info


def _folder_info(path: str) -> dict:
    return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    return size > LFS_MIN_SIZE or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


class _Handler(BaseHTTPRequestHandler):
    """Routes one request. `self.server.hub` is the owning `HubServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "GmsTestHub/0.1"

    # -- plumbing -----------------------------------------------------------------------------------
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        logger.debug("%s %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.replace("\n", " "), **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json({"error": err.message}, err.status, headers)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        # Split before unquoting: revisions such as "refs%2Fconvert%2Fparquet" are one segment.
        self.segments = [unquote(s) for s in split.path.strip("/").split("/")] if split.path.strip("/") else []
        has_body = self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding")
        self.body = self._body() if has_body else b""
        hub = self.server.hub
        try:
            if not self._route():
                hub.record_unhandled(self.command, self.path)
                self._error(HubError(501 if self.segments[:1] == ["api"] else 404,
                                     f"test Hub server: unhandled route {self.command} {self.path}"))
        except HubError as err:
            self._error(err)
        except Exception as err:  # a server bug must reach the test output, not hang the client
            logger.exception("test Hub server crashed on %s %s", self.command, self.path)
            hub.record_unhandled(self.command, self.path, repr(err))
            self._error(HubError(500, f"test Hub server error: {err!r}"))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch  # noqa: N815 - http.server naming

    # -- routing ------------------------------------------------------------------------------------
    def _repo_from(self, parts: list[str], repo_type: str) -> tuple[dict, list[str]]:
        """Split `parts` into (repo, rest): "org/name" ids first, then legacy one-segment ids."""
        store = self.server.hub.store
        if len(parts) >= 2 and (repo_type, f"{parts[0]}/{parts[1]}") in store.repos:
            return store.repos[(repo_type, f"{parts[0]}/{parts[1]}")], parts[2:]
        if parts and (repo_type, parts[0]) in store.repos:
            return store.repos[(repo_type, parts[0])], parts[1:]
        repo_id = "/".join(parts[:2])
        raise HubError(404, f"Repository {repo_type}/{repo_id} not found", "RepoNotFound")

    def _route(self) -> bool:
        seg, cmd = self.segments, self.command
        if seg[:1] == ["api"]:
            if seg == ["api", "repos", "create"] and cmd == "POST":
                return self._create_repo()
            if seg == ["api", "validate-yaml"] and cmd == "POST":
                self._json({"errors": [], "warnings": []})
                return True
            if seg == ["api", "whoami-v2"] and cmd == "GET":
                self._json({"type": "user", "name": "test-user", "fullname": "Test User", "orgs": [],
                            "auth": {"accessToken": {"displayName": "dummy", "role": "write"}}})
                return True
            if len(seg) >= 3 and seg[1] in REPO_TYPES:
                repo, rest = self._repo_from(seg[2:], REPO_TYPES[seg[1]])
                return self._repo_api(repo, rest)
            return False
        if seg[:1] == ["_lfs"] and len(seg) == 2 and cmd == "PUT":
            return self._lfs_put(seg[1])
        repo_type = "model"
        parts = seg
        if seg[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = REPO_TYPES[seg[0]], seg[1:]
        for i in (1, 2):  # "{name}.git/info/lfs/objects/batch" or "{org}/{name}.git/..."
            if parts[i:] == ["info", "lfs", "objects", "batch"] and parts[i - 1].endswith(".git"):
                repo, _ = self._repo_from(parts[: i - 1] + [parts[i - 1][:-4]], repo_type)
                return cmd == "POST" and self._lfs_batch(repo)
        for i in (2, 1):  # "{org}/{name}/resolve/{rev}/{path}" or "{name}/resolve/..."
            if len(parts) > i + 2 and parts[i] == "resolve" and cmd in ("GET", "HEAD"):
                repo, _ = self._repo_from(parts[:i], repo_type)
                return self._resolve(repo, parts[i + 1], "/".join(parts[i + 2:]))
        return False

    def _repo_api(self, repo: dict, rest: list[str]) -> bool:
        store, cmd = self.server.hub.store, self.command
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        if cmd == "GET" and (action == "" or (action == "revision" and len(args) == 1)):
            return self._repo_info(repo, args[0] if args else "main")
        if cmd == "GET" and action == "tree" and args:
            return self._tree(repo, args[0], "/".join(args[1:]).strip("/"))
        if cmd == "GET" and action == "refs" and not args:
            with store.lock:
                refs = dict(repo["refs"])
            branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs.items()]
            self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
            return True
        if cmd == "GET" and action == "commits" and len(args) == 1:
            return self._commits(repo, args[0])
        if cmd == "POST" and action == "paths-info" and len(args) == 1:
            return self._paths_info(repo, args[0])
        if cmd == "POST" and action == "preupload" and len(args) == 1:
            return self._preupload(repo, args[0])
        if cmd == "POST" and action == "commit" and len(args) == 1:
            return self._commit(repo, args[0])
        if cmd == "POST" and action == "branch" and len(args) == 1:
            payload = json.loads(self.body or b"{}")
            store.create_branch(repo, args[0], payload.get("startingPoint"))
            self._json({})
            return True
        return False

    # -- API routes ---------------------------------------------------------------------------------
    def _repo_url(self, repo: dict) -> str:
        return f"{self.server.hub.url}/{URL_PREFIXES[repo['type']]}{repo['id']}"

    def _create_repo(self) -> bool:
        payload = json.loads(self.body or b"{}")
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES or not payload.get("name"):
            raise HubError(400, f"create repo: expected a name and type in {list(URL_PREFIXES)}, got {payload}")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        created = self.server.hub.store.create_repo(repo_type, repo_id, payload.get("visibility") == "private")
        url = self._repo_url({"type": repo_type, "id": repo_id})
        if created:
            self._json({"url": url, "name": repo_id, "id": repo_id})
        else:
            self._json({"error": "You already created this repo", "url": url}, 409,
                       {"X-Error-Message": "You already created this repo"})
        return True

    def _repo_info(self, repo: dict, revision: str) -> bool:
        sha, files = self.server.hub.store.files(repo, revision)
        siblings = []
        for path, entry in sorted(files.items()):
            sibling = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry["lfs"]:
                sibling["lfs"] = {"size": entry["size"], "sha256": entry["sha256"],
                                  "pointerSize": len(_lfs_pointer(entry["sha256"], entry["size"]))}
            siblings.append(sibling)
        commit = repo["commits"][sha]
        self._json({"_id": hashlib.sha1(repo["id"].encode()).hexdigest()[:24], "id": repo["id"],
                    "author": repo["id"].split("/")[0] if "/" in repo["id"] else None, "sha": sha,
                    "private": repo["private"], "gated": False, "disabled": False, "downloads": 0, "likes": 0,
                    "tags": [], "createdAt": repo["createdAt"], "lastModified": commit["date"],
                    "siblings": siblings, "cardData": {}})
        return True

    def _tree(self, repo: dict, revision: str, folder: str) -> bool:
        sha, files = self.server.hub.store.files(repo, revision)
        recursive = _truthy(self.query.get("recursive"))
        prefix = folder + "/" if folder else ""
        if folder and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"{folder} is not a folder at {sha}", "EntryNotFound", {"X-Repo-Commit": sha})
        entries, folders = [], set()
        for path, entry in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entries.append(_entry_info(path, entry))
        self._json([_folder_info(f) for f in sorted(folders)] + entries)
        return True

    def _paths_info(self, repo: dict, revision: str) -> bool:
        sha, files = self.server.hub.store.files(repo, revision)
        form = parse_qs(self.body.decode())
        if "json" in self.headers.get("Content-Type", ""):
            form = {k: v if isinstance(v, list) else [v] for k, v in json.loads(self.body).items()}
        infos = []
        for path in (p.strip("/") for p in form.get("paths", [])):
            if path in files:
                infos.append(_entry_info(path, files[path]))
            elif path == "" or any(p.startswith(path + "/") for p in files):
                infos.append(_folder_info(path))
        self._json(infos)
        return True

    def _commits(self, repo: dict, revision: str) -> bool:
        sha = self.server.hub.store.resolve_revision(repo, revision)
        history = []
        while sha:
            commit = repo["commits"][sha]
            history.append({"id": sha, "title": commit["title"], "message": commit["message"],
                            "authors": [{"user": "test-user"}], "date": commit["date"]})
            sha = commit["parent"]
        self._json(history)
        return True

    def _preupload(self, repo: dict, revision: str) -> bool:
        if self.query.get("create_pr"):
            raise HubError(501, "test Hub server: create_pr is not supported")
        _, files = self.server.hub.store.files(repo, revision)
        answers = []
        for item in json.loads(self.body)["files"]:
            path = item["path"]
            lfs = _is_lfs(path, item["size"], base64.b64decode(item.get("sample", "")))
            remote = files.get(path)
            oid = None
            if remote is not None and remote["lfs"] == lfs:
                oid = remote["sha256"] if lfs else remote["oid"]
            answers.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        self._json({"files": answers, "commitOid": self.server.hub.store.resolve_revision(repo, revision)})
        return True

    def _commit(self, repo: dict, revision: str) -> bool:
        if self.query.get("create_pr"):
            raise HubError(501, "test Hub server: create_pr is not supported")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit: expected NDJSON starting with a 'header' line")
        operations = []
        for line in lines[1:]:
            value = dict(line["value"])
            if line["key"] == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"commit: unsupported encoding {value.get('encoding')!r}")
                value["content"] = base64.b64decode(value["content"])
            operations.append((line["key"], value))
        sha = self.server.hub.store.commit(repo, revision, lines[0]["value"], operations)
        self._json({"success": True, "commitOid": sha, "commitUrl": f"{self._repo_url(repo)}/commit/{sha}",
                    "hookOutput": ""})
        return True

    # -- LFS ----------------------------------------------------------------------------------------
    def _lfs_batch(self, repo: dict) -> bool:
        payload = json.loads(self.body)
        if payload.get("operation") != "upload":
            raise HubError(400, f"LFS batch: only 'upload' is supported, got {payload.get('operation')!r}")
        store, objects = self.server.hub.store, []
        for obj in payload.get("objects", []):
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not store.has_blob(obj["oid"]):
                answer["actions"] = {"upload": {"href": f"{self.server.hub.url}/_lfs/{obj['oid']}"}}
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")
        return True

    def _lfs_put(self, oid: str) -> bool:
        # Keep the bytes now: datasets deletes its temporary parquet files before the commit.
        actual = self.server.hub.store.put_blob(self.body)
        if actual != oid:
            raise HubError(400, f"LFS upload: body sha256 is {actual}, expected the oid {oid}")
        self._send(200)
        return True

    # -- downloads ----------------------------------------------------------------------------------
    def _resolve(self, repo: dict, revision: str, path: str) -> bool:
        sha, files = self.server.hub.store.files(repo, revision)
        entry = files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path} at {sha}", "EntryNotFound", {"X-Repo-Commit": sha})
        size = entry["size"]
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(size)})
        start, end, status = 0, size - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2]) if match[2] else size - 1, size - 1)
            else:
                start = max(size - int(match[2]), 0)
            if start >= size or start > end:
                self._send(416, headers={**headers, "Content-Range": f"bytes */{size}"})
                return True
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = b""
        if self.command == "GET":
            with open(self.server.hub.store.blob_path(entry["sha256"]), "rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(body)
        return True


class HubServer:
    """A Hub-compatible server on 127.0.0.1, serving the repos stored under `root`, in a daemon thread.

    Args:
        root (`str` or `Path`):
            Folder holding the blobs and repo metadata (created if missing; existing repos are loaded).
        port (`int`, *optional*, defaults to `0`):
            Port to bind; `0` picks a free one.

    Example:
        ```py
        server = HubServer(tmp_path / "hub").start()   # server.url == "http://127.0.0.1:PORT"
        env = hub_env(server.url, tmp_path / "hf_home")
        server.stop()
        ```
    """

    def __init__(self, root: str | Path, port: int = 0):
        self.store = HubStore(root)
        self.port = port
        self.url = ""
        self.unhandled: list[str] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def record_unhandled(self, method: str, path: str, detail: str = "") -> None:
        message = f"{method} {path} {detail}".strip()
        self.unhandled.append(message)
        logger.error("test Hub server: unhandled request %s (answered 404/501)", message)

    def start(self) -> "HubServer":
        """Bind and serve in a background thread; returns `self`."""
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        logger.info("test Hub server on %s (root %s)", self.url, self.store.root)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hub_env(url: str, hf_home: str | Path) -> dict[str, str]:
    """Environment variables that point a fresh client process at the test server.

    Args:
        url (`str`): The server's `url`.
        hf_home (`str` or `Path`): A temporary folder for `HF_HOME` (the hub and datasets caches go inside).

    Returns:
        `dict[str, str]`: to pass to `run_python` (or `subprocess`); set `HF_HUB_OFFLINE="1"` to test the cache.

    Example:
        ```py
        env = hub_env(server.url, tmp_path / "hf")
        run_python("import huggingface_hub", env)
        ```
    """
    hf_home = Path(hf_home)
    return {
        "HF_ENDPOINT": url,
        "HF_TOKEN": "dummy",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_DATASETS_CACHE": str(hf_home / "datasets"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "30",
        "HF_HUB_ETAG_TIMEOUT": "30",
    }


def run_python(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh interpreter with the repo root on `PYTHONPATH`.

    The inherited `HF_*` / `HUGGINGFACE_*` variables are dropped so that only `env` configures the client
    (e.g. a parent's `HF_DATASETS_OFFLINE=1` would otherwise override `HF_HUB_OFFLINE` in `datasets`).

    Args:
        code (`str`): Python source to run.
        env (`dict`): Variables to set on top of the cleaned environment, typically `hub_env(...)`.
        timeout (`float`, *optional*, defaults to `120`): Seconds before the process is killed.

    Returns:
        `subprocess.CompletedProcess`: with `stdout` and `stderr` as text.

    Raises:
        `RuntimeError`: if the process fails or times out; the message holds its stdout and stderr.

    Example:
        ```py
        out = run_python("print(1 + 1)", hub_env(server.url, tmp_path / "hf"))
        assert out.stdout.strip() == "2"
        ```
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    full_env.update({k: str(v) for k, v in env.items()})
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH")]))
    try:
        result = subprocess.run([sys.executable, "-c", code], env=full_env, cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"client process timed out after {timeout}s\n--- stdout:\n{err.stdout}\n"
                           f"--- stderr:\n{err.stderr}") from err
    if result.returncode != 0:
        raise RuntimeError(f"client process exited with {result.returncode}\n--- stdout:\n{result.stdout}\n"
                           f"--- stderr:\n{result.stderr}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the test Hub server standalone.")
    parser.add_argument("--root", required=True, help="Folder for blobs and repos (kept across restarts).")
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0 = any free port).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = HubServer(args.root, port=args.port).start()
    logger.info("export HF_ENDPOINT=%s HF_TOKEN=dummy HF_HUB_DISABLE_XET=1", server.url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
