"""Round trips through the local Hub test server with the real `huggingface_hub` and `datasets` clients.

Each client runs in a fresh interpreter (`run_python`): the libraries read `HF_ENDPOINT` at import time.
"""

import hashlib
import json

import pytest


try:
    from tests.hub_server import HubServer, hub_env, run_python
except ImportError:  # pytest's rootdir-relative import when tests/ is not a package
    from hub_server import HubServer, hub_env, run_python


@pytest.fixture
def hub(tmp_path):
    server = HubServer(tmp_path / "hub_root").start()
    yield server
    server.stop()
    assert server.unhandled == [], f"the client used routes the test server does not handle: {server.unhandled}"


def _write_folder(folder):
    folder.mkdir()
    (folder / "notes.txt").write_text("hello hub\n")
    (folder / "sub").mkdir()
    payload = bytes(range(256)) * 8192  # 2 MiB: answered as an LFS upload
    (folder / "sub" / "weights.bin").write_bytes(payload)
    return {"notes.txt": b"hello hub\n", "sub/weights.bin": payload}


def test_upload_folder_then_download_online_and_offline(hub, tmp_path):
    expected = _write_folder(tmp_path / "folder")
    env = hub_env(hub.url, tmp_path / "hf_home")
    run_python(
        f"""
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("org/model", exist_ok=True)
api.create_repo("org/model", exist_ok=True)  # existing repo: the 409 path
api.upload_folder(repo_id="org/model", folder_path={str(tmp_path / "folder")!r})
""",
        env,
    )
    download = """
import hashlib, json, pathlib
from huggingface_hub import hf_hub_download, snapshot_download
digests = {}
for name in ["notes.txt", "sub/weights.bin"]:
    digests["file:" + name] = hashlib.sha256(pathlib.Path(hf_hub_download("org/model", name)).read_bytes()).hexdigest()
if not OFFLINE:
    root = pathlib.Path(snapshot_download("org/model"))
    for path in root.rglob("*"):
        if path.is_file():
            digests["snap:" + path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
print(json.dumps(digests))
"""
    online = json.loads(run_python("OFFLINE = False" + download, env).stdout)
    want = {name: hashlib.sha256(data).hexdigest() for name, data in expected.items()}
    assert {k[5:]: v for k, v in online.items() if k.startswith("file:")} == want
    snapshot = {k[5:]: v for k, v in online.items() if k.startswith("snap:")}
    assert snapshot.pop(".gitattributes")  # created with the repo, like on the Hub
    assert snapshot == want

    # Kill the server: the cache alone must serve the same bytes.
    hub.stop()
    offline = json.loads(run_python("OFFLINE = True" + download, {**env, "HF_HUB_OFFLINE": "1"}).stdout)
    assert offline == {k: v for k, v in online.items() if k.startswith("file:")}


def test_old_commit_stays_resolvable(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    out = run_python(
        """
import json
from huggingface_hub import HfApi, hf_hub_download
api = HfApi()
api.create_repo("org/versions")
first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="org/versions").oid
api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id="org/versions")
old = open(hf_hub_download("org/versions", "a.txt", revision=first)).read()
new = open(hf_hub_download("org/versions", "a.txt")).read()
print(json.dumps([old, new, api.model_info("org/versions").sha != first]))
""",
        env,
    )
    assert json.loads(out.stdout) == ["v1", "v2", True]


def test_dataset_push_to_hub_then_load_dataset(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    build = """
import numpy as np
from PIL import Image
from datasets import Dataset, DatasetDict, Features, Image as ImageFeature, Value

def make(split, n, seed):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (8 + i, 6, 3), dtype=np.uint8)) for i in range(n)]
    features = Features({"image": ImageFeature(), "name": Value("string")})
    return Dataset.from_dict({"image": images, "name": [f"{split}_{i}" for i in range(n)]}, features=features)

def rows(dd):
    return {split: [[r["name"], r["image"].mode, r["image"].size, r["image"].tobytes().hex()] for r in dd[split]]
            for split in sorted(dd)}
"""
    pushed = run_python(
        build
        + """
import json
dd = DatasetDict({"train": make("train", 3, 0), "test": make("test", 2, 1)})
dd.push_to_hub("org/ds")
print(json.dumps(rows(dd)))
""",
        env,
    )
    loaded = run_python(
        build
        + """
import json, datasets
dd = datasets.load_dataset("org/ds")
assert isinstance(dd["train"].features["image"], ImageFeature), dd["train"].features
streamed = datasets.load_dataset("org/ds", streaming=True)  # reads the parquet files with Range requests
assert rows({split: list(streamed[split]) for split in streamed}) == rows(dd)
print(json.dumps(rows(dd)))
""",
        hub_env(hub.url, tmp_path / "fresh_home"),
    )
    expected = json.loads(pushed.stdout.splitlines()[-1])
    assert json.loads(loaded.stdout.splitlines()[-1]) == expected
    assert [row[0] for row in expected["train"]] == ["train_0", "train_1", "train_2"]


def test_missing_file_and_missing_repo_raise_the_hub_errors(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    out = run_python(
        """
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
HfApi().create_repo("org/exists", repo_type="dataset")
results = []
for kwargs, error in [
    (dict(repo_id="org/exists", filename="nope.txt", repo_type="dataset"), EntryNotFoundError),
    (dict(repo_id="org/missing", filename="config.json"), RepositoryNotFoundError),
    (dict(repo_id="org/exists", filename=".gitattributes", repo_type="dataset", revision="nobranch"),
     RevisionNotFoundError),
]:
    try:
        hf_hub_download(**kwargs)
        results.append("no error")
    except error:
        results.append(error.__name__)
print(",".join(results))
""",
        env,
    )
    assert out.stdout.split() == ["EntryNotFoundError,RepositoryNotFoundError,RevisionNotFoundError"]
