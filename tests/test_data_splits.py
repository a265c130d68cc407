"""Split lists (restricted unpickler, JSON, URLs) and the validation carve-out (gms_hub/data/splits.py)."""

import json
import pickle
from collections import Counter

import pytest

from _data_utils import split_json, split_names, split_pickle
from gms_hub.data.splits import (
    carve_validation,
    default_split_url,
    load_split_lists,
    restricted_pickle_loads,
)

DATASETS = ["bus", "busi", "glas", "ham10000", "kvasir-instrument"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_shared_pickle_reads_with_restricted_unpickler_and_matches_json(dataset):
    lists = load_split_lists(split_pickle(dataset))
    names = split_names(dataset)
    assert list(lists.train) == names["train"] and list(lists.test) == names["test"]
    assert len(lists.sha256) == 64


def test_json_split_list_reads_like_the_pickle():
    from_json = load_split_lists(split_json("glas"))
    from_pickle = load_split_lists(split_pickle("glas"))
    assert (from_json.train, from_json.test) == (from_pickle.train, from_pickle.test)
    assert len(from_json.train) == 85 and len(from_json.test) == 80


class _Exploit:
    """Unpickling this calls os.system (creates a file) unless the unpickler refuses globals."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_restricted_unpickler_rejects_malicious_pickle(tmp_path):
    """Error path: a pickle that would run a shell command is refused and the command never runs."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"train": {"name_list": ["a"]}, "test": {"name_list": [_Exploit(marker)]}})
    pickle_path = tmp_path / "evil_train_test_names.pkl"
    pickle_path.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|only dicts, lists and strings"):
        load_split_lists(pickle_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    {"train": {"name_list": [1, 2]}, "test": {"name_list": []}},  # ints
    {"train": {"name_list": ("a",)}, "test": {"name_list": []}},  # tuple
    {"train": {"name_list": {"a"}}, "test": {"name_list": []}},  # set (protocol 4 has an opcode for it)
])
def test_restricted_unpickler_rejects_non_string_content(payload):
    """Error path: anything but dicts, lists and strings in a split pickle is refused."""
    with pytest.raises(pickle.UnpicklingError, match="only dicts, lists and strings"):
        restricted_pickle_loads(pickle.dumps(payload, protocol=4))


def test_restricted_unpickler_rejects_class_instance():
    """Error path: a pickled object of a class (a global lookup) is refused."""
    from collections import OrderedDict

    with pytest.raises(pickle.UnpicklingError, match="collections.OrderedDict"):
        restricted_pickle_loads(pickle.dumps(OrderedDict(train=[])))


def test_split_list_with_duplicate_name_is_an_error(tmp_path):
    """Error path: duplicate name inside a split list."""
    path = tmp_path / "dup.json"
    path.write_text(json.dumps({"train": ["a", "b", "a"], "test": ["c"]}))
    with pytest.raises(ValueError, match="duplicate name in 'train': a"):
        load_split_lists(path)


def test_split_list_with_train_test_overlap_is_an_error(tmp_path):
    """Error path: a name in both train and test."""
    path = tmp_path / "overlap.json"
    path.write_text(json.dumps({"train": ["a", "b"], "test": ["b"]}))
    with pytest.raises(ValueError, match="both train and test: b"):
        load_split_lists(path)


def test_split_list_missing_file_and_bad_keys(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_split_lists(tmp_path / "nope.json")
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match="expected the keys 'train' and 'test'"):
        load_split_lists(path)


def test_default_url_uses_the_reference_file_names():
    assert default_split_url("busi").endswith("/Dataset/busi/busi_train_test_names.pkl")
    assert default_split_url("kvasir-instrument").endswith(
        "/Dataset/kvasir-instrument/kvasir_train_test_names.pkl"
    )
    assert default_split_url("busi").startswith("https://raw.githubusercontent.com/King-HAW/GMS/main/")
    with pytest.raises(ValueError, match="not 'lits'"):
        default_split_url("lits")


def test_offline_default_url_tells_to_pass_splits(monkeypatch):
    """Error path: offline (HF_HUB_OFFLINE) download of the default split list."""
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE is set.*--splits"):
        load_split_lists(dataset="busi")


def test_unreachable_url_tells_to_pass_splits(monkeypatch):
    """Error path: the split URL cannot be reached (connection refused on a closed local port)."""
    import socket

    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from huggingface_hub import constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConnectionError, match="--splits") as raised:
        load_split_lists(f"http://127.0.0.1:{port}/busi_train_test_names.pkl", timeout=5)
    assert "HF_HUB_OFFLINE" not in str(raised.value)  # a real connection attempt, not the offline shortcut


def test_carve_validation_is_a_deterministic_partition():
    train_names = split_names("busi")["train"]
    train, validation = carve_validation(train_names, 0.1, seed=2333)
    assert len(validation) == 52  # round(0.1 * 517)
    assert sorted(train + validation) == sorted(train_names) and not set(train) & set(validation)
    assert validation == [n for n in train_names if n in set(validation)]  # keeps the paper's order
    assert carve_validation(train_names, 0.1, seed=2333) == (train, validation)
    assert carve_validation(list(reversed(train_names)), 0.1, seed=2333)[1] == list(reversed(validation))
    assert set(carve_validation(train_names, 0.1, seed=7)[1]) != set(validation)


def test_carve_validation_stratifies_by_label():
    train_names = split_names("busi")["train"]
    labels = {name: name.rsplit("_", 1)[0] for name in train_names}
    _, validation = carve_validation(train_names, 0.1, seed=2333, labels=labels)
    in_train = Counter(labels.values())
    in_validation = Counter(labels[name] for name in validation)
    assert sum(in_validation.values()) == 52
    for label, count in in_train.items():  # each label gets its proportional share, +-1 for rounding
        assert abs(in_validation[label] - 52 * count / len(train_names)) < 1


def test_carve_validation_rejects_bad_fraction():
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        carve_validation(["a", "b"], 0.0)
