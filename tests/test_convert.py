import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gms_hub import GMS, LatentMappingModel
from gms_hub.models.reference import convert_reference_state_dict, load_reference_state_dict
from _reference_lmm import ReferenceLMM, random_reference_state_dict, reference_key_shapes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def reference_pth(tmp_path):
    state = random_reference_state_dict(reference_key_shapes())
    path = tmp_path / "best_model.pth"
    torch.save({"model": state}, str(path))
    return path, state


def test_reference_network_loads_json_layout_strictly():
    ReferenceLMM().load_state_dict(random_reference_state_dict(reference_key_shapes()), strict=True)


def test_converted_weights_reproduce_reference_outputs(reference_pth):
    path, state = reference_pth
    reference = ReferenceLMM().eval()
    reference.load_state_dict(state, strict=True)
    converted, _ = load_reference_state_dict(path)
    lmm = LatentMappingModel().eval()
    lmm.load_state_dict(converted, strict=True)
    z = torch.randn(2, 4, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = lmm(z), reference(z)
    for head in ("level3", "level2", "level1", "out"):
        assert torch.allclose(ours[head], theirs[head], atol=1e-4, rtol=1e-4), head


def test_from_reference_checkpoint_builds_a_gms(reference_pth, tiny_vae_dir):
    path, state = reference_pth
    model = GMS.from_reference_checkpoint(str(path), vae=str(tiny_vae_dir), vae_subfolder=None, image_size=64)
    assert torch.equal(model.lmm.conv_in.weight, state["input_blocks.weight"])
    assert torch.equal(model.lmm.encoder[0].res.act1.weight, state["conv1_0.resblock.conv1.1.weight"])
    assert not model.training


def test_other_keys_are_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}}, str(path))
    with pytest.raises(ValueError, match="under 'model'.*state_dict"):
        load_reference_state_dict(path)
    state = random_reference_state_dict(reference_key_shapes())
    state["conv9_9.resblock.act1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="conv9_9"):
        convert_reference_state_dict(state)


def test_missing_reference_key_fails_strict_load(reference_pth, tiny_vae_dir, tmp_path):
    _, state = reference_pth
    state.pop("convds0.2.weight")
    path = tmp_path / "partial.pth"
    torch.save({"model": state}, str(path))
    with pytest.raises(ValueError, match=r"missing keys.*heads\.out\.2\.weight"):
        GMS.from_reference_checkpoint(str(path), vae=str(tiny_vae_dir), vae_subfolder=None, image_size=64)


def test_reference_names_do_not_wait_on_network_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("GMS_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        load_reference_state_dict("busi")
    with pytest.raises(FileNotFoundError, match="reference names"):
        load_reference_state_dict("no-such-file.pth")


def test_convert_cli_writes_a_loadable_folder(reference_pth, tiny_vae_dir, tmp_path):
    path, _ = reference_pth
    out = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "gms_hub.convert", "--checkpoint", str(path), "--output_dir", str(out),
         "--vae", str(tiny_vae_dir), "--vae_subfolder", "none", "--include_vae"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    model = GMS.from_pretrained(out)
    converted, _ = load_reference_state_dict(path)
    assert all(torch.equal(model.lmm.state_dict()[k], v) for k, v in converted.items())
    assert "selected it by Dice on the test split" in (out / "README.md").read_text()


def test_convert_cli_refuses_a_model_that_needs_no_conversion(tiny_gms, tmp_path):
    folder = tmp_path / "already-gms"
    tiny_gms.save_pretrained(folder, include_vae=True)
    result = subprocess.run(
        [sys.executable, "-m", "gms_hub.convert", "--checkpoint", str(folder), "--output_dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1 and "names a local model, not a released checkpoint" in result.stderr
    assert not (tmp_path / "out").exists()
