"""A small local HTTP server speaking the part of the Hugging Face Hub API that push and pull use.

Standard library only (`http.server` in a background thread), so tests need nothing extra. Point a client at it by
starting the client process with `hub_env(url, home)` (HF_ENDPOINT, a dummy HF_TOKEN, HF_HUB_DISABLE_XET=1 and a
private HF_HOME): huggingface_hub reads these once at import, which is why clients run in subprocesses.

    with HubServer(tmp_path / "hub") as hub:
        subprocess.run([...], env=hub_env(hub.url, tmp_path / "home"))
        assert hub.files("tester/clap-tiny") >= {"config.json"}
        assert not hub.unknown  # every request the client made had a route

Routes (repo_type is models, datasets or spaces; `{repo}` is `namespace/name`; `{rev}` is `main` or the head sha):

    POST /api/repos/create                         {"name","organization","type","sdk","visibility"|"private"}
    POST /api/repos/delete
    POST /api/validate-yaml                        parses the README front matter, checks model-index and Space sdk
    GET  /api/whoami-v2
    GET  /api/{type}s/{repo}[/revision/{rev}]      info with sha, siblings, cardData (and sdk for a Space)
    GET  /api/{type}s/{repo}/tree/{rev}[/{path}]   ?recursive=true lists everything below
    POST /api/{type}s/{repo}/paths-info/{rev}
    POST /api/{type}s/{repo}/preupload/{rev}       uploadMode "regular" for every file: no LFS, no Xet
    POST /api/{type}s/{repo}/commit/{rev}          NDJSON: header, file (base64), deletedFile, deletedFolder
    GET  /api/spaces/{repo}/runtime                always RUNNING on cpu-basic
    GET|POST|DELETE /api/spaces/{repo}/variables   the Space's variables (also set by create_repo's `variables`)
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{path}  X-Repo-Commit, ETag, Content-Length; Range; 404 X-Error-Code

Streaming a dataset repo through `hf://datasets/...` (HfFileSystem) or `datasets.load_dataset(id, streaming=True)`
uses the info, tree and ranged resolve routes (and HEADs of optional files such as README.md, which may be 404s).
Those clients can also run in-process, with huggingface_hub's and datasets' import-time settings patched (see the
`hub` fixture of tests/test_stream_hub.py). `cut_downloads` makes chosen downloads stop short of the Content-Length
they announce, as a dropped connection does.

Repos live as folders, `<root>/<type>s/<namespace>/<name>/files/`, with `meta.json` beside `files/` holding the
commit history; a commit's sha is derived from a server-wide commit counter. Only the head commit's files are kept,
so `{rev}` may be "main" or the head sha. Writes need an `Authorization: Bearer` header (any token); private repos
need one to be read. A request without a route gets a 404 and is logged in `unknown` (and on stderr).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = ("models", "datasets", "spaces")
USER = "tester"
# Requests clients make that a mock may leave unanswered (a 404 is what the client expects to tolerate).
TOLERATED = (re.compile(r"^/api/agent-harnesses"),)
GITATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"

_API_REPO = r"^/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_API_SPACE = r"^/api/spaces/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_RESOLVE = re.compile(
    r"^/(?:(?P<type>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
ROUTES: list[tuple[str, re.Pattern, str]] = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/repos/delete$"), "delete_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(_API_REPO + r"(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("GET", re.compile(_API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("POST", re.compile(_API_REPO + r"/paths-info/(?P<rev>[^/]+)$"), "paths_info"),
    ("POST", re.compile(_API_REPO + r"/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(_API_REPO + r"/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(_API_SPACE + r"/runtime$"), "space_runtime"),
    ("GET", re.compile(_API_SPACE + r"/variables$"), "space_variables"),
    ("POST", re.compile(_API_SPACE + r"/variables$"), "space_variables"),
    ("DELETE", re.compile(_API_SPACE + r"/variables$"), "space_variables"),
    ("HEAD", _RESOLVE, "resolve"),
    ("GET", _RESOLVE, "resolve"),
]


class HubError(Exception):
    """An error answer: status, X-Error-Code header, message (also in the JSON body as "error")."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: object) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


@dataclass
class Request:
    method: str
    path: str
    status: int


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file's content: what the Hub reports as `oid` / ETag for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def front_matter(text: str) -> dict | None:
    """The YAML header of a README (None when there is none); raises yaml.YAMLError when it does not parse."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else {}


def _model_index_errors(metadata: dict) -> list[str]:
    errors = []
    for i, entry in enumerate(metadata.get("model-index") or []):
        if not isinstance(entry, dict) or not entry.get("name"):
            errors.append(f"model-index[{i}] needs a name")
            continue
        for j, result in enumerate(entry.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not (result.get("task") or {}).get("type"):
                errors.append(f"{where}.task.type is required")
            if not (result.get("dataset") or {}).get("type") or not (result.get("dataset") or {}).get("name"):
                errors.append(f"{where}.dataset needs type and name")
            for k, metric in enumerate(result.get("metrics") or []):
                if "type" not in metric or "value" not in metric:
                    errors.append(f"{where}.metrics[{k}] needs type and value")
            if not result.get("metrics"):
                errors.append(f"{where}.metrics is empty")
    return errors


class HubServer:
    """The server and its store. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[Request] = []
        self.unknown: list[str] = []
        self._lock = threading.RLock()
        # Test hook imitating a connection that drops mid-download: "<type>s/<namespace>/<name>/<path>" -> n. A GET of
        # that file announces the full Content-Length, sends only the file's bytes before offset n, then closes.
        self.cut_downloads: dict[str, int] = {}
        # commits so far (a root may be served again): part of every new sha, so shas never repeat
        self._commits = sum(len(json.loads(m.read_text())["commits"]) for m in self.root.glob("*/*/*/meta.json"))
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- store ----------------------------------------------------------------------------------------------

    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        """The folder holding a repo's `files/` and `meta.json`."""
        plural = repo_type if repo_type.endswith("s") else repo_type + "s"
        namespace, name = repo_id.split("/")
        return self.root / plural / namespace / name

    def files(self, repo_id: str, repo_type: str = "model") -> set[str]:
        """Paths of the files at the head of a repo."""
        files = self.repo_dir(repo_id, repo_type) / "files"
        return {p.relative_to(files).as_posix() for p in files.rglob("*") if p.is_file()}

    def _meta(self, repo: Path) -> dict:
        meta = repo / "meta.json"
        if not meta.is_file():
            raise HubError(404, "Repository not found", "RepoNotFound")
        return json.loads(meta.read_text())

    def _new_sha(self, repo: Path, summary: str) -> str:
        self._commits += 1
        return hashlib.sha1(f"{repo}\n{self._commits}\n{summary}".encode()).hexdigest()

    def _write_commit(self, repo: Path, meta: dict, summary: str, changed: list[str]) -> str:
        sha = self._new_sha(repo, summary)
        meta["sha"] = sha
        meta["lastModified"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        meta["commits"].append({"id": sha, "title": summary, "files": changed, "date": meta["lastModified"]})
        (repo / "meta.json").write_text(json.dumps(meta, indent=1))
        return sha


def _make_handler(server: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        hub = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    hub: HubServer

    # ---- plumbing -------------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        pass  # requests are recorded in `hub.requests`; stderr is kept for unknown routes

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        return self.raw_body

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict:
        try:
            return json.loads(self._body() or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"invalid JSON body: {error}") from error

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, method: str = "") -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, value: object, status: int = 200, method: str = "") -> None:
        self._send(status, json.dumps(value).encode(), method=method)

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        status = 500
        try:
            self.raw_body = self._read_body()  # read before any answer, so an error keeps the connection usable
            for route_method, pattern, name in ROUTES:
                match = pattern.match(split.path)
                if match and route_method == method:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    status = getattr(self, name)(method=method, **params) or 200
                    break
            else:
                if not any(p.match(split.path) for p in TOLERATED):
                    self.hub.unknown.append(f"{method} {self.path}")
                    print(f"hub_server: no route for {method} {self.path}", file=sys.stderr, flush=True)
                raise HubError(404, f"no route for {method} {split.path}")
        except HubError as error:
            status = error.status
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send(status, json.dumps({"error": error.message, **error.extra}).encode(), headers, method)
        except Exception as error:  # a bug in the mock: answer 500 and say so where a test will show it
            print(f"hub_server: {method} {self.path} failed: {error!r}", file=sys.stderr, flush=True)
            status = 500
            self._send(500, json.dumps({"error": repr(error)}).encode(), method=method)
        finally:
            self.hub.requests.append(Request(method, self.path, status))

    # ---- helpers --------------------------------------------------------------------------------------------

    def _require_token(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, type: str | None, ns: str, name: str, rev: str | None = None) -> tuple[Path, dict]:
        repo = self.hub.repo_dir(f"{ns}/{name}", type or "models")
        meta = self.hub._meta(repo)
        if meta["private"] and not self.headers.get("Authorization"):
            raise HubError(401, "Repository not found", "RepoNotFound")
        if rev is not None and rev not in ("main", meta["sha"]):
            raise HubError(404, f"Revision Not Found: {rev}", "RevisionNotFound")
        return repo, meta

    @staticmethod
    def _safe_path(path: str) -> str:
        parts = path.split("/")
        if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
            raise HubError(400, f"invalid path in repo: {path!r}")
        return path

    def _entry(self, files: Path, path: Path) -> dict:
        rel = path.relative_to(files).as_posix()
        if path.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel}
        data = path.read_bytes()
        return {"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": rel}

    def _url_prefix(self, type: str | None) -> str:
        return "" if type in (None, "models") else f"{type}/"

    # ---- routes ---------------------------------------------------------------------------------------------

    def whoami(self, method: str) -> None:
        self._require_token()
        self._send_json({"type": "user", "name": USER, "fullname": "Test User", "orgs": [], "auth": {}})

    def create_repo(self, method: str) -> int:
        self._require_token()
        body = self._json_body()
        plural = (body.get("type") or "model") + "s"
        if plural not in REPO_TYPES:
            raise HubError(400, f"invalid repo type {body.get('type')!r}")
        if plural == "spaces" and not body.get("sdk"):
            raise HubError(400, "a Space needs an sdk")
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        url = f"{self.hub.url}/{self._url_prefix(plural)}{repo_id}"
        with self.hub._lock:
            repo = self.hub.repo_dir(repo_id, plural)
            if (repo / "meta.json").is_file():
                # the client reads "url" from this answer too when it is told exist_ok
                raise HubError(409, f"You already created this {plural[:-1]} repo", url=url)
            (repo / "files").mkdir(parents=True)
            (repo / "files" / ".gitattributes").write_text(GITATTRIBUTES)
            meta = {
                "id": repo_id,
                "type": plural,
                "private": body.get("visibility") == "private" or bool(body.get("private")),
                "sdk": body.get("sdk"),
                "variables": {
                    v["key"]: {"value": v["value"], "description": v.get("description")}
                    for v in body.get("variables") or []
                },
                "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "commits": [],
            }
            self.hub._write_commit(repo, meta, "initial commit", [".gitattributes"])
        self._send_json({"url": url, "name": repo_id, "id": repo_id})
        return 200

    def delete_repo(self, method: str) -> None:
        self._require_token()
        body = self._json_body()
        repo_id = f"{body.get('organization') or USER}/{body['name']}"
        repo = self.hub.repo_dir(repo_id, (body.get("type") or "model") + "s")
        with self.hub._lock:
            self.hub._meta(repo)
            shutil.rmtree(repo)
        self._send_json({})

    def validate_yaml(self, method: str) -> int:
        body = self._json_body()
        content, repo_type = body.get("content") or "", body.get("repoType") or "model"
        try:
            metadata = front_matter(content)
        except yaml.YAMLError as error:
            self._send_json({"errors": [{"message": f"YAML does not parse: {error}"}], "warnings": []}, 400)
            return 400
        if metadata is None:
            self._send_json({"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]})
            return 200
        errors = _model_index_errors(metadata)
        if repo_type == "space" and not metadata.get("sdk"):
            errors.append("a Space card needs `sdk`")
        status = 400 if errors else 200
        self._send_json({"errors": [{"message": e} for e in errors], "warnings": []}, status)
        return status

    def repo_info(self, method: str, type: str, ns: str, name: str, rev: str | None = None) -> None:
        repo, meta = self._repo(type, ns, name, rev)
        files = repo / "files"
        siblings = []
        for path in sorted(p for p in files.rglob("*") if p.is_file()):
            entry = self._entry(files, path)
            siblings.append({"rfilename": entry["path"], "size": entry["size"], "blobId": entry["oid"]})
        readme = files / "README.md"
        card = front_matter(readme.read_text()) if readme.is_file() else None
        info = {
            "_id": hashlib.sha1(meta["id"].encode()).hexdigest()[:24],
            "id": meta["id"],
            "author": ns,
            "sha": meta["sha"],
            "private": meta["private"],
            "disabled": False,
            "gated": False,
            "createdAt": meta["createdAt"],
            "lastModified": meta["lastModified"],
            "tags": list((card or {}).get("tags") or []),
            "siblings": siblings,
            "cardData": card,
        }
        if type == "models" and card:
            info.update(pipeline_tag=card.get("pipeline_tag"), library_name=card.get("library_name"))
        if type == "spaces":
            info.update(sdk=meta["sdk"], runtime={"stage": "RUNNING", "hardware": {"current": "cpu-basic"}})
        self._send_json(info)

    def space_runtime(self, method: str, ns: str, name: str) -> None:
        self._repo("spaces", ns, name)
        self._send_json({"stage": "RUNNING", "hardware": {"current": "cpu-basic", "requested": "cpu-basic"}})

    def space_variables(self, method: str, ns: str, name: str) -> None:
        if method != "GET":
            self._require_token()
        with self.hub._lock:
            repo, meta = self._repo("spaces", ns, name)
            variables = meta.setdefault("variables", {})
            if method != "GET":
                body = self._json_body()
                if method == "POST":
                    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                    variables[body["key"]] = {
                        "value": body["value"],
                        "description": body.get("description"),
                        "updatedAt": now,
                    }
                else:
                    variables.pop(body["key"], None)
                (repo / "meta.json").write_text(json.dumps(meta, indent=1))
        self._send_json(variables)

    def tree(self, method: str, type: str, ns: str, name: str, rev: str, path: str = "") -> None:
        repo, _ = self._repo(type, ns, name, rev)
        files = repo / "files"
        base = files / self._safe_path(path) if path else files
        if not base.is_dir():
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        recursive = self.query.get("recursive", "false").lower() in ("1", "true")
        children = base.rglob("*") if recursive else base.iterdir()
        self._send_json([self._entry(files, p) for p in sorted(children)])

    def paths_info(self, method: str, type: str, ns: str, name: str, rev: str) -> None:
        repo, _ = self._repo(type, ns, name, rev)
        files = repo / "files"
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw).get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        entries = [self._entry(files, files / p) for p in paths if (files / self._safe_path(p)).exists()]
        self._send_json(entries)

    def preupload(self, method: str, type: str, ns: str, name: str, rev: str) -> None:
        self._require_token()
        self._repo(type, ns, name, rev)
        body = self._json_body()
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body.get("files", [])]
        self._send_json({"files": answer, "commitOid": None})

    def commit(self, method: str, type: str, ns: str, name: str, rev: str) -> None:
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "the mock does not do pull requests")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.hub._lock:
            repo, meta = self._repo(type, ns, name, rev)
            if header.get("parentCommit") not in (None, meta["sha"]):
                raise HubError(412, "parent commit is not the head of the branch")
            files = repo / "files"
            writes: dict[str, bytes] = {}
            deletes: list[Path] = []
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                path = self._safe_path(value["path"].rstrip("/"))
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    writes[path] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    target = files / path
                    if not target.exists():
                        raise HubError(404, f"cannot delete {path}: not in the repo", "EntryNotFound")
                    deletes.append(target)
                else:  # lfsFile, copy: never asked for, since preupload answers "regular"
                    raise HubError(400, f"unsupported commit operation {key!r}")
            for target in deletes:
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            for path, data in writes.items():
                (files / path).parent.mkdir(parents=True, exist_ok=True)
                tmp = files / f"{path}.partial-{os.getpid()}"
                tmp.write_bytes(data)
                tmp.replace(files / path)
            changed = sorted(writes) + sorted(d.relative_to(files).as_posix() for d in deletes)
            sha = self.hub._write_commit(repo, meta, header.get("summary") or "commit", changed)
        commit_url = f"{self.hub.url}/{self._url_prefix(type)}{ns}/{name}/commit/{sha}"
        self._send_json({"commitUrl": commit_url, "commitOid": sha, "pullRequestUrl": None, "success": True})

    def resolve(self, method: str, ns: str, name: str, rev: str, path: str, type: str | None = None) -> int:
        repo, meta = self._repo(type or "models", ns, name, rev)
        target = repo / "files" / self._safe_path(path)
        if not target.is_file():
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = target.read_bytes()
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": meta["sha"],
            "ETag": f'"{git_blob_sha(data)}"',
            "Accept-Ranges": "bytes",
        }
        status = 200
        range_match = re.match(r"bytes=(\d+)-(\d*)$", self.headers.get("Range", ""))
        if range_match and method == "GET":
            start = int(range_match.group(1))
            end = min(int(range_match.group(2)) if range_match.group(2) else len(data) - 1, len(data) - 1)
            if start >= len(data):
                raise HubError(416, f"Range Not Satisfiable: {self.headers['Range']}")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data, status = data[start : end + 1], 206
        else:
            start = 0
        cut = self.hub.cut_downloads.get(f"{type or 'models'}/{ns}/{name}/{path}")
        if cut is not None and method == "GET":
            self._send_cut(status, data, headers, max(0, cut - start))
        else:
            self._send(status, data, headers, method)
        return status

    def _send_cut(self, status: int, body: bytes, headers: dict[str, str], sent: int) -> None:
        """Announce all of `body`, send its first `sent` bytes, and close the connection (see `cut_downloads`)."""
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body[:sent])
        self.wfile.flush()
        self.close_connection = True


@contextlib.contextmanager
def run_hub_server(root_dir: str | Path) -> Iterator[str]:
    """Serve a Hub rooted at `root_dir` for the duration of the block; yields the endpoint URL."""
    with HubServer(root_dir) as server:
        yield server.url


def hub_env(endpoint: str, home: str | Path, token: str = "hf_dummy", base: dict | None = None) -> dict[str, str]:
    """The environment for a client process talking to `endpoint`, with its own HF_HOME (cache, modules, token)."""
    env = dict(os.environ if base is None else base)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_MODULES_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_TOKEN=token,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    return env
