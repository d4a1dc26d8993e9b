"""The MNIST U-Net: its convolution, group norm and blocks against numpy, its compiler options, and data-parallel training."""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course_utils import unet

SMALL = unet.UNetConfig(channels=(8, 8, 16, 16), emb_dim=16, num_heads=2)


def test_conv2d_against_numpy():
    rng = np.random.default_rng(1)
    x, kernel = rng.normal(size=(2, 5, 4, 3)), rng.normal(size=(3, 3, 3, 2))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 4, 2))
    for i in range(3):
        for j in range(3):
            expected += np.einsum("nhwc,cd->nhwd", padded[:, i:i + 5, j:j + 4], kernel[i, j])
    np.testing.assert_allclose(unet.conv2d(jnp.float32(x), jnp.float32(kernel)), expected, rtol=1e-4, atol=1e-4)


def _numpy_group_norm(x, groups, scale, bias, eps=1e-6):
    n, h, w, c = x.shape
    g = x.reshape(n, h * w, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = g.var(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("shape, groups", [((3, 5, 4, 16), 8), ((2, 3, 3, 6), 1), ((4, 7, 7, 64), 8)])
def test_group_norm_against_numpy_and_flax(shape, groups):
    """The course's GroupNorm (moments from per-channel means) equals numpy's two-pass one and flax's, values and gradients."""
    rng = np.random.default_rng(3)
    x = rng.normal(loc=2.0, scale=3.0, size=shape).astype(np.float32)
    ours = unet.GroupNorm(shape[-1], num_groups=groups, rngs=nnx.Rngs(0))
    ours.scale[...] = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    ours.bias[...] = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    expected = _numpy_group_norm(x.astype(np.float64), groups, np.asarray(ours.scale[...]), np.asarray(ours.bias[...]))
    np.testing.assert_allclose(ours(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)
    flax_norm = nnx.GroupNorm(shape[-1], num_groups=groups, rngs=nnx.Rngs(0))
    nnx.update(flax_norm, nnx.state(ours))   # the same parameter names: checkpoints load into either
    weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
    grads = [jax.grad(lambda x, m=m: jnp.sum(m(x) * weights))(jnp.asarray(x)) for m in (ours, flax_norm)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def test_group_norm_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="num_features.*12.*num_groups.*8"):
        unet.GroupNorm(12, num_groups=8, rngs=nnx.Rngs(0))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the options concern XLA's CPU backend (YNNPACK) only")
def test_convolution_options_are_used_and_change_nothing_but_speed():
    """Where this XLA hands convolutions to YNNPACK, the options are accepted and stop it (else the U-Net
    would silently run 2-3x slower); older XLAs (jax < 0.8) know neither; results are unchanged."""
    from course_utils import config

    options = config.convolution_compiler_options()
    assert options in ({}, config.CONVOLUTION_OPTIONS)
    x = jax.random.normal(jax.random.key(0), (4, 7, 7, 8))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 8, 4))
    fast = config.jit(jax.grad(lambda x, k: jnp.sum(unet.conv2d(x, k) ** 2), argnums=(0, 1)))
    plain = jax.jit(jax.grad(lambda x, k: jnp.sum(unet.conv2d(x, k) ** 2), argnums=(0, 1)))
    for a, b in zip(fast(x, kernel), plain(x, kernel)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    shape = (8, 14, 14, 32)   # large enough for XLA to hand the convolution to YNNPACK by default
    x, kernel = jnp.ones(shape), jnp.ones((3, 3, 32, 16))
    plain_ynn = _ynn_convolutions(plain.lower(x, kernel).compile().as_text())
    assert _ynn_convolutions(fast.jitted().lower(x, kernel).compile().as_text()) == 0
    if options:
        assert plain_ynn > 0, "the shape should be large enough for XLA to use YNNPACK without the options"
    else:
        assert plain_ynn == 0, f"this XLA gives convolutions to YNNPACK but refuses {config.CONVOLUTION_OPTIONS}"


def _ynn_convolutions(hlo):
    """How many YNNPACK fusions in compiled HLO text contain a convolution."""
    bodies = {m.group(1): m.group(2) for m in re.finditer(r"^%?(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M)}
    calls = re.findall(r"calls=%?([\w.\-]+)[^\n]*__ynn_fusion", hlo)
    return sum("convolution(" in bodies.get(name, "") for name in calls)


def test_self_attention_against_numpy():
    block = unet.SelfAttention(8, num_heads=2, rngs=nnx.Rngs(0))
    x = np.random.default_rng(2).normal(size=(2, 3, 2, 8))
    h = _numpy_group_norm(x, 8, np.asarray(block.norm.scale[...]), np.asarray(block.norm.bias[...]),
                          eps=block.norm.epsilon)
    tokens = h.reshape(2, 6, 8) @ np.asarray(block.qkv.kernel[...]) + np.asarray(block.qkv.bias[...])
    out = np.zeros((2, 6, 8))
    for head in range(2):
        q, k, v = (tokens[:, :, part * 8 + head * 4: part * 8 + head * 4 + 4] for part in range(3))
        scores = q @ k.transpose(0, 2, 1) / 2.0
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out[:, :, head * 4:head * 4 + 4] = weights @ v
    expected = x + (out @ np.asarray(block.out.kernel[...]) + np.asarray(block.out.bias[...])).reshape(x.shape)
    np.testing.assert_allclose(block(jnp.float32(x)), expected, rtol=1e-4, atol=1e-4)


def test_self_attention_treats_pixels_as_a_set():
    """Permuting the pixels permutes the output (attention has no notion of position)."""
    block = unet.SelfAttention(8, num_heads=2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(3), (1, 4, 4, 8))
    perm = np.random.default_rng(4).permutation(16)
    shuffled = x.reshape(1, 16, 8)[:, perm].reshape(x.shape)
    np.testing.assert_allclose(block(shuffled).reshape(1, 16, 8), block(x).reshape(1, 16, 8)[:, perm], atol=1e-5)


def test_residual_block_adds_its_input_and_uses_the_embedding():
    block = unet.ResidualBlock(8, 8, 4, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(5), (2, 4, 4, 8))
    emb = jax.random.normal(jax.random.key(6), (2, 4))
    # With the second convolution zeroed, the block is the identity.
    block.conv2.kernel[...] = jnp.zeros_like(block.conv2.kernel[...])
    block.conv2.bias[...] = jnp.zeros_like(block.conv2.bias[...])
    np.testing.assert_allclose(block(x, emb), x, atol=1e-6)
    changed = unet.ResidualBlock(8, 16, 4, rngs=nnx.Rngs(0))
    assert changed(x, emb).shape == (2, 4, 4, 16)
    assert not np.allclose(changed(x, emb), changed(x, emb + 1.0))


def test_unet_shapes_and_conditioning():
    model = unet.UNet(SMALL, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(7), (4, 8, 8, 1))
    t, y = jnp.array([1, 50, 100, 200]), jnp.array([0, 3, 9, -1])
    out = model(x, t, y)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, model(x, t, jnp.array([1, 3, 9, -1])))
    assert not np.allclose(out, model(x, t + 1, y))


def test_self_attention_rejects_channels_that_do_not_split_into_heads():
    with pytest.raises(ValueError, match="num_heads"):
        unet.SelfAttention(10, num_heads=4, rngs=nnx.Rngs(0))


_TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", int(sys.argv[1]))
    import jax.numpy as jnp
    from flax import nnx
    from course_utils import guidance, schedules, unet
    config = unet.UNetConfig(channels=(8, 8, 16, 16), emb_dim=16, num_heads=2)
    model = unet.UNet(config, rngs=nnx.Rngs(0))
    data = jax.random.uniform(jax.random.key(1), (32, 8, 8, 1)) * 2 - 1
    labels = jnp.arange(32) % 10
    ab = schedules.make_schedule(schedules.cosine_betas(50)).alpha_bars
    losses = guidance.train_conditional(model, data, labels, ab, steps=3, key=jax.random.key(2), batch_size=8,
                                        chunk=1, progress=False)
    leaf = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))[0]
    print(json.dumps(dict(devices=len(jax.devices()), losses=[float(v) for v in losses],
                          param_devices=len(leaf.sharding.device_set))))
""")


def _train_on(devices):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    out = subprocess.run([sys.executable, "-c", _TWO_DEVICES, str(devices)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_is_data_parallel_over_two_cpu_devices_and_matches_one_device():
    one, two = _train_on(1), _train_on(2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert two["param_devices"] == 2, "the trained parameters should be replicated on both devices"
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-4)


def test_fan_in_normal_has_lecun_scale_and_follows_the_key():
    shape = (3, 3, 32, 64)                      # fan_in = 288
    a = unet.fan_in_normal(jax.random.key(0), shape)
    assert a.shape == shape and a.dtype == jnp.float32
    assert abs(float(jnp.mean(a))) < 4 / np.sqrt(a.size) / np.sqrt(288)
    assert abs(float(jnp.std(a)) * np.sqrt(288) - 1.0) < 0.02   # 18,432 draws: std within 2 %
    np.testing.assert_array_equal(a, unet.fan_in_normal(jax.random.key(0), shape))
    assert not np.allclose(a, unet.fan_in_normal(jax.random.key(1), shape))
    traced = jax.jit(lambda k: unet.fan_in_normal(k, (64, 32)))(jax.random.key(2))   # under a trace: jax.random
    assert abs(float(jnp.std(traced)) * 8.0 - 1.0) < 0.1
