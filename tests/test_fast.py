"""gms_hub.inference.fast: every fast path equals the paper-faithful fp32 eager path to float rounding, on tiny VAEs."""

import copy

import pytest
import torch
import torch.nn.functional as F

TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
)
# Float32 rounding differences between mathematically equal computations stay far below this (relative to the
# largest output magnitude, see `assert_equal_to_rounding`).
ATOL = 1e-5


def assert_equal_to_rounding(got, expected, tolerance=ATOL):
    """max |got - expected| <= tolerance * max(1, max |expected|): float32 rounding, not a different result."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = max(1.0, expected.abs().max().item())
    difference = (got - expected).abs().max().item()
    assert difference <= tolerance * scale, f"max abs difference {difference:.3g} for outputs up to {scale:.3g}"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on 2 shared cores: with 2 OpenMP threads each small op waits for a busy core (~8 ms), 1 thread
    runs them in microseconds. Restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_vae(seed=0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
    # Larger-than-init output weights, so the decoded mask spreads over [0, 1] instead of sitting near 0.5.
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(20.0)
    return vae


def make_gms(image_size=32, seed=0):
    from gms_hub import GMS

    vae = make_vae(seed)
    torch.manual_seed(seed + 1)
    return GMS(vae=vae, image_size=image_size, base_channels=16, channel_mult=(1, 1, 1, 1)).eval()


def paper_probs(vae, latents):
    """The paper's mask decoding, written out: vae.decode, mean over RGB, (x + 1) / 2, clamp."""
    decoded = vae.decode(latents).sample
    return ((decoded.mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1)


def test_subpixel_weights_rejects_non_3x3_kernels():
    from gms_hub.inference.fast import subpixel_weights

    with pytest.raises(ValueError, match="3x3"):
        subpixel_weights(torch.zeros(4, 4, 5, 5), None)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (6, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_upsample_equals_nearest_upsample_then_conv(size, channels_last):
    from diffusers.models.upsampling import Upsample2D

    from gms_hub.inference.fast import SubpixelUpsample2D

    torch.manual_seed(0)
    reference = Upsample2D(6, use_conv=True, out_channels=5)
    fast = SubpixelUpsample2D(copy.deepcopy(reference))
    x = torch.randn(2, 6, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference(x)
        got = fast(x)
    assert got.shape == (2, 5, 2 * size[0], 2 * size[1])
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last or size == (1, 1)
    assert_equal_to_rounding(got, expected)


def test_subpixel_upsample_gradients_match():
    from diffusers.models.upsampling import Upsample2D

    from gms_hub.inference.fast import SubpixelUpsample2D

    torch.manual_seed(0)
    reference = Upsample2D(4, use_conv=True)
    fast = SubpixelUpsample2D(copy.deepcopy(reference))
    x = torch.randn(2, 4, 5, 3)
    grads = []
    for module in (reference, fast):
        xi = x.clone().requires_grad_(True)
        (module(xi) ** 2).sum().backward()
        grads.append((xi.grad, module.conv.weight.grad, module.conv.bias.grad))
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_subpixel_upsample_refuses_other_upsamplers():
    from diffusers.models.upsampling import Upsample2D

    from gms_hub.inference.fast import SubpixelUpsample2D, apply_subpixel_upsampling, is_subpixel_compatible

    transposed = Upsample2D(4, use_conv_transpose=True)
    assert not is_subpixel_compatible(transposed)
    assert not is_subpixel_compatible(Upsample2D(4, use_conv=False))
    with pytest.raises(ValueError, match="Upsample2D"):
        SubpixelUpsample2D(transposed)
    container = torch.nn.Sequential(transposed)
    assert apply_subpixel_upsampling(container) == 0
    assert container[0] is transposed


def test_subpixel_decoder_equals_original_on_odd_latents():
    from gms_hub.inference.fast import SubpixelUpsample2D, apply_subpixel_upsampling

    vae = make_vae()
    fast = copy.deepcopy(vae)
    assert apply_subpixel_upsampling(fast.decoder) == 3
    assert sum(isinstance(m, SubpixelUpsample2D) for m in fast.modules()) == 3
    z = torch.randn(2, 4, 5, 7)  # odd latent sides
    with torch.no_grad():
        assert_equal_to_rounding(fast.decode(z).sample, vae.decode(z).sample)


def test_subpixel_keeps_state_dict():
    from gms_hub.inference.fast import apply_subpixel_upsampling

    vae = make_vae()
    fast = copy.deepcopy(vae)
    apply_subpixel_upsampling(fast.decoder)
    before, after = vae.state_dict(), fast.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_subpixel_weight_cache_follows_weight_updates():
    from diffusers.models.upsampling import Upsample2D

    from gms_hub.inference.fast import SubpixelUpsample2D

    torch.manual_seed(0)
    reference = Upsample2D(3, use_conv=True)
    fast = SubpixelUpsample2D(reference)  # shares the conv with `reference`
    x = torch.randn(1, 3, 4, 4)
    with torch.inference_mode():
        fast(x)  # fills the cache
    with torch.no_grad():
        reference.conv.weight.mul_(-2.0)  # in-place update bumps the version counter
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), reference(x), rtol=0, atol=ATOL)


@pytest.mark.parametrize("latent_size", [(4, 4), (5, 7)])
def test_folded_mask_decode_equals_paper_decode(latent_size):
    from gms_hub.inference.fast import decode_mask_probabilities

    vae = make_vae()
    z = torch.randn(2, 4, *latent_size) * 3
    with torch.no_grad():
        expected = paper_probs(vae, z)
        got = decode_mask_probabilities(vae, z, fold_mean=True)
    assert got.shape == (2, 1, 8 * latent_size[0], 8 * latent_size[1])
    assert 0.05 < (expected > 0.5).float().mean() < 0.95  # a real test: the mask is neither empty nor full
    assert_equal_to_rounding(got, expected)


def test_optimize_gives_the_same_masks_as_the_default_path():
    """The optimized path's error against exact (float64) math is of the order of the fp32 eager path's own, and
    it gives the same masks. (oneDNN's channels_last kernels round ~5x more than its NCHW ones: hence the 4x.)"""
    from gms_hub.inference.fast import optimize

    model = make_gms()
    fast = optimize(copy.deepcopy(model))
    exact = copy.deepcopy(model).double()
    pixel_values = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        expected = model(pixel_values).mask_probs
        got = fast(pixel_values).mask_probs
        truth = exact(pixel_values.double()).mask_probs.float()
    eager_error = (expected - truth).abs().max().item()
    fast_error = (got - truth).abs().max().item()
    assert fast_error <= 4 * eager_error + 1e-6, (fast_error, eager_error)
    decided = (truth - 0.5).abs() > 2 * max(eager_error, fast_error)  # not within rounding of the threshold
    assert decided.float().mean() > 0.9
    assert torch.equal((got > 0.5)[decided], (expected > 0.5)[decided])


def test_optimize_changes_no_weights_and_segment_agrees():
    import numpy as np

    from gms_hub.inference.fast import optimize

    model = make_gms()
    fast = optimize(copy.deepcopy(model))
    before, after = model.state_dict(), fast.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    image = np.random.default_rng(0).integers(0, 256, size=(45, 37, 3), dtype=np.uint8)
    _, expected = model.segment(image, return_probabilities=True)
    _, got = fast.segment(image, return_probabilities=True)
    assert got.shape == (45, 37)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)  # see the float64 test above


def test_optimized_model_saves_and_loads_like_the_original(tmp_path):
    from gms_hub import GMS
    from gms_hub.inference.fast import optimize

    model = make_gms()
    optimize(copy.deepcopy(model)).save_pretrained(tmp_path / "fast", include_vae=True)
    model.save_pretrained(tmp_path / "plain", include_vae=True)
    loaded, plain = GMS.from_pretrained(tmp_path / "fast"), GMS.from_pretrained(tmp_path / "plain")
    expected = plain.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())


def test_optimized_model_pickles():
    import pickle

    from gms_hub.inference.fast import optimize

    fast = optimize(make_gms(), autocast_dtype=torch.bfloat16)
    clone = pickle.loads(pickle.dumps(fast))
    assert clone.fast_settings == fast.fast_settings and clone.fast_settings is not fast.fast_settings
    pixel_values = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(clone(pixel_values).mask_probs, fast(pixel_values).mask_probs)


def test_optimize_survives_deepcopy():
    from gms_hub.inference.fast import optimize

    fast = optimize(make_gms())
    clone = copy.deepcopy(fast)
    assert clone.fast_settings == fast.fast_settings and clone.fast_settings is not fast.fast_settings
    with torch.no_grad():
        clone.vae.decoder.conv_out.bias.add_(1.0)  # changes the clone only
    z = torch.randn(1, 4, 4, 4)
    with torch.inference_mode():
        assert not torch.allclose(clone.decode_mask(z), fast.decode_mask(z))


def test_fast_settings_are_data_the_model_reads():
    """optimize() replaces no method: forward and decode_mask are the class's, and they follow model.fast_settings."""
    from gms_hub.inference.fast import FastSettings, optimize

    model = make_gms()
    fast = optimize(copy.deepcopy(model), fast_upsample=False, channels_last=False, autocast_dtype=torch.bfloat16)
    assert not {"forward", "decode_mask", "_fast_settings"} & set(vars(fast))
    assert fast.fast_settings == FastSettings(fold_mask_mean=True, autocast_dtype=torch.bfloat16)
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    z = torch.randn(2, 4, 4, 4) * 3
    with torch.inference_mode():
        expected_probs, expected_decoded = model(pixel_values).mask_probs, model.decode_mask(z)
        assert fast(pixel_values).mask_probs.dtype == torch.float32
        assert not torch.equal(fast(pixel_values).mask_probs, expected_probs)  # bf16 and the folded head
        fast.fast_settings = FastSettings()  # back to the paper-faithful path: bit-identical again
        assert torch.equal(fast(pixel_values).mask_probs, expected_probs)
        assert torch.equal(fast.decode_mask(z), expected_decoded)
        fast.fast_settings.fold_mask_mean = True
        assert not torch.equal(fast.decode_mask(z), expected_decoded)
        assert_equal_to_rounding(fast.decode_mask(z), expected_decoded)


def test_mask_probabilities_is_the_paper_formula():
    from gms_hub.inference.fast import mask_probabilities

    decoded = torch.tensor([[[[-3.0, 0.2]], [[-1.0, 0.4]], [[1.0, 0.6]]]])  # (1, 3, 1, 2)
    expected = torch.tensor([[[[0.0, 0.7]]]])  # mean -1 -> 0 (clamped); mean 0.4 -> 0.7
    torch.testing.assert_close(mask_probabilities(decoded), expected, rtol=0, atol=1e-7)


def test_optimize_rejects_bad_arguments():
    from gms_hub.inference.fast import optimize

    with pytest.raises(ValueError, match="autocast_dtype"):
        optimize(make_gms(), autocast_dtype=torch.float32)
    with pytest.raises(TypeError, match="GMS or a diffusers AutoencoderKL"):
        optimize(torch.nn.Linear(2, 2))


def test_optimize_bare_vae_keeps_decode_output():
    from gms_hub.inference.fast import optimize

    vae = make_vae()
    fast = optimize(copy.deepcopy(vae))
    z = torch.randn(1, 4, 3, 5)
    with torch.no_grad():
        assert_equal_to_rounding(fast.decode(z).sample, vae.decode(z).sample)


def _three_pass_loss(model, pixel_values, masks):
    """The reference training loss: each loss head decoded by its own decoder pass."""
    from gms_hub.training.losses import LOSS_HEADS, mask_latents, soft_dice_loss

    with torch.no_grad():
        z_image = model.encode(pixel_values)
    z_mask = mask_latents(model, masks)
    heads = model.lmm(z_image)
    loss = 0.0
    for name in LOSS_HEADS:
        loss = loss + F.mse_loss(heads[name], z_mask) + soft_dice_loss(model.decode_mask(heads[name]), masks)
    return loss


def _lmm_grads(model):
    """All LMM gradients as one float64 vector (`level3` is not in the loss, so its head gets none)."""
    grads = [p.grad.double().flatten() for _, p in model.lmm.named_parameters() if p.grad is not None]
    assert grads, "no gradient reached the LMM"
    return torch.cat(grads)


def _relative_error(got, truth):
    return ((got.double() - truth).norm() / truth.norm()).item()


@pytest.mark.parametrize("variant", ["batched", "optimized", "checkpointed"])
def test_training_loss_and_gradients_equal_three_decoder_passes(variant):
    """gms_loss (one decoder pass over 3 heads), optionally optimized, vs the 3-pass loss: the same to rounding.

    Measured against the float64 three-pass loss, the fast path's errors are of the order of the fp32 eager path's.
    """
    from gms_hub.inference.fast import optimize
    from gms_hub.training.losses import gms_loss

    model = make_gms()
    model.train()
    torch.manual_seed(3)
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = (torch.rand(2, 1, 32, 32) > 0.5).float()

    exact = copy.deepcopy(model).double()
    true_loss = _three_pass_loss(exact, pixel_values.double(), masks.double())
    true_loss.backward()
    true_grads = _lmm_grads(exact)

    fast = copy.deepcopy(model)
    reference = _three_pass_loss(model, pixel_values, masks)
    reference.backward()
    eager_error = _relative_error(_lmm_grads(model), true_grads)

    if variant != "batched":
        optimize(fast, gradient_checkpointing=variant == "checkpointed")
    calls = []
    fast.vae.decoder.up_blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    loss = gms_loss(fast, pixel_values, masks).loss
    loss.backward()
    assert len(calls) == (2 if variant == "checkpointed" else 1)  # checkpointing reruns the block in backward
    torch.testing.assert_close(loss.double(), true_loss.detach(), rtol=1e-5, atol=1e-5)
    fast_error = _relative_error(_lmm_grads(fast), true_grads)
    assert fast_error <= 4 * eager_error + 1e-6, (fast_error, eager_error)
    assert all(p.grad is None for p in fast.vae.parameters())  # frozen decoder: no weight gradients


def test_batched_decode_equals_separate_decodes():
    from gms_hub.inference.fast import optimize

    model = optimize(make_gms())
    heads = [torch.randn(2, 4, 4, 4, requires_grad=True) for _ in range(3)]
    separate = [model.decode_mask(h) for h in heads]
    batched = model.decode_mask(torch.cat(heads)).split(2)
    for a, b in zip(batched, separate):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    weights = torch.rand(3 * 2, 1, 32, 32)
    grads_separate = torch.autograd.grad(sum((s * w).sum() for s, w in zip(separate, weights.split(2))), heads)
    grads_batched = torch.autograd.grad((torch.cat(batched) * weights).sum(), heads)
    for a, b in zip(grads_batched, grads_separate):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_autocast_forward_returns_float32_close_to_fp32():
    from gms_hub.inference.fast import optimize

    model = make_gms()
    fast = optimize(copy.deepcopy(model), autocast_dtype=torch.bfloat16)
    pixel_values = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        expected = model(pixel_values).mask_probs
        got = fast(pixel_values)
    assert got.mask_probs.dtype == got.mask_latents.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: an approximation, not a rewrite (agreement is reported by benchmarks/).
    assert (got.mask_probs - expected).abs().mean() < 0.05
    assert (got.mask_probs - expected).abs().max() > 0  # it did run in bf16


@pytest.mark.parametrize("optimized", [False, True])
def test_model_compile_traces_gms_in_one_graph(optimized):
    """`nn.Module.compile` on a GMS: the whole forward is one graph (fullgraph=True fails on any graph break).

    The cheap "eager" backend checks the tracing only; the inductor test below is slow (minutes on 2 cores).
    """
    from gms_hub.inference.fast import optimize

    torch._dynamo.reset()
    model = optimize(make_gms()) if optimized else make_gms()
    compiled = copy.deepcopy(model)
    compiled.compile(backend="eager", fullgraph=True, exact_rewrites=False)
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(compiled(pixel_values).mask_probs, model(pixel_values).mask_probs, rtol=0, atol=ATOL)


def test_standard_compile_applies_the_exact_rewrites_first():
    """`model.compile()` (the standard call) runs the fast path: same weights and keys, same probabilities to
    float rounding, and the decoder's upsamplers replaced; applying it twice changes nothing more."""
    from gms_hub.inference.fast import SubpixelUpsample2D

    torch._dynamo.reset()
    model = make_gms()
    compiled = copy.deepcopy(model)
    compiled.compile(backend="eager", fullgraph=True)
    assert compiled.fast_settings.fast_upsample and compiled.fast_settings.fold_mask_mean
    replaced = [m for m in compiled.vae.decoder.modules() if isinstance(m, SubpixelUpsample2D)]
    assert len(replaced) == len(TINY_VAE_CONFIG["block_out_channels"]) - 1
    expected_state = model.state_dict()
    got_state = compiled.state_dict()
    assert list(got_state) == list(expected_state)
    for key, value in expected_state.items():
        torch.testing.assert_close(got_state[key].contiguous(), value, rtol=0, atol=0)
    pixel_values = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        expected = model(pixel_values).mask_probs
        got = compiled(pixel_values).mask_probs
        truth = copy.deepcopy(model).double()(pixel_values.double()).mask_probs.float()
        compiled.compile(backend="eager", fullgraph=True)  # again: no second rewrite
        again = compiled(pixel_values).mask_probs
    assert len([m for m in compiled.vae.decoder.modules() if isinstance(m, SubpixelUpsample2D)]) == len(replaced)
    torch.testing.assert_close(again, got, rtol=0, atol=0)
    # Same error against float64 math as eager's own (see test_optimize_gives_the_same_masks_as_the_default_path).
    eager_error = (expected - truth).abs().max().item()
    compiled_error = (got - truth).abs().max().item()
    assert compiled_error <= 4 * eager_error + 1e-6, (compiled_error, eager_error)
    decided = (truth - 0.5).abs() > 2 * max(eager_error, compiled_error)
    assert decided.float().mean() > 0.9
    assert torch.equal((got > 0.5)[decided], (expected > 0.5)[decided])


@pytest.mark.slow  # inductor compiles C++ kernels: ~1-5 min on 2 shared cores even for a tiny model
def test_model_compile_with_inductor_matches_eager():
    from gms_hub.inference.fast import optimize

    torch._dynamo.reset()
    model = optimize(make_gms())
    compiled = optimize(copy.deepcopy(model), compile=True)
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        # Inductor fuses and reorders float ops: rounding differences grow through the random network.
        assert_equal_to_rounding(compiled(pixel_values).mask_probs, model(pixel_values).mask_probs, tolerance=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fast_paths_agree_with_fp32():
    from gms_hub.inference.fast import optimize

    model = make_gms().cuda()
    exact = optimize(copy.deepcopy(model))
    mixed = optimize(copy.deepcopy(model), autocast_dtype=torch.bfloat16)
    pixel_values = torch.rand(4, 3, 32, 32, device="cuda") * 2 - 1
    with torch.inference_mode():
        expected = model(pixel_values).mask_probs
        got_exact = exact(pixel_values).mask_probs
        got_mixed = mixed(pixel_values).mask_probs
    assert (got_exact - expected).abs().max() < 1e-3  # TF32 convolutions on by default: looser than on CPU
    assert got_mixed.dtype == torch.float32
    a, b = got_mixed > 0.5, expected > 0.5
    assert (a & b).sum() / (a | b).sum().clamp(min=1) > 0.95


def _run_benchmark(script, argv):
    """Run benchmarks/<script>.py as a script; return what it printed."""
    import subprocess
    import sys

    from tests._training_utils import REPO_ROOT, subprocess_env

    command = [sys.executable, str(REPO_ROOT / "benchmarks" / f"{script}.py"), *argv]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def test_infer_speed_benchmark_prints_table_and_ratio(tmp_path):
    make_vae().save_pretrained(str(tmp_path / "vae"))
    out = _run_benchmark("infer_speed", ["--vae", str(tmp_path / "vae"), "--device", "cpu", "--image_size", "32",
                                         "--batch_size", "2", "--repeats", "1", "--paths", "eager,exact,exact+bf16"])
    lines = out.strip().splitlines()
    assert any(line.startswith("exact ") and "1.00000" in line for line in lines)  # same masks as eager
    assert any(line.startswith("exact+bf16 ") for line in lines)
    assert lines[-1].startswith("ratio: exact = ")


def test_train_speed_benchmark_prints_table_and_ratio(tmp_path):
    make_vae().save_pretrained(str(tmp_path / "vae"))
    out = _run_benchmark("train_speed", ["--vae", str(tmp_path / "vae"), "--device", "cpu", "--image_size", "32",
                                         "--batch_size", "2", "--repeats", "1", "--compile_backend", "eager",
                                         "--paths", "eager,batched,exact+ckpt,exact+bf16+compile"])
    lines = out.strip().splitlines()
    assert any(line.startswith("exact+ckpt ") for line in lines)
    assert any(line.startswith("exact+bf16+compile ") for line in lines)  # bf16 autocast + compile trace and run
    assert lines[-1].startswith("ratio: ") and "over the paper-faithful fp32 eager step" in lines[-1]
