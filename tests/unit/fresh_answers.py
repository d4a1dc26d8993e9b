'''A fresh set of students' answers, written for issue 27 before reading the checker's hand-written hints: each is
the solution with one edit, as a student would slip (``wrong``), or another correct form of it (``ok``).

``SOLUTIONS[name]`` is the solution's source; an answer is ``(name, old, new, names)``: the source with ``old``
replaced by ``new``. ``names`` is None for a correct answer, else a regular expression that a line of the
checker's explanation must match for the message to name the slip (matched case-insensitively against the lines
that explain, not against the input shown). Used by ``test_fresh_answers.py``, which also reports the counts.
'''

SOLUTIONS = {
"forward_mean": """
def forward_mean(x_prev, beta):
    return jnp.sqrt(1 - beta) * x_prev
""",
"forward_variance": """
def forward_variance(beta):
    return jnp.asarray(beta, dtype=jnp.float32)
""",
"forward_step": """
def forward_step(x_prev, beta, noise):
    return forward_mean(x_prev, beta) + jnp.sqrt(forward_variance(beta)) * noise
""",
"linear_betas": """
def linear_betas(T, beta_start=1e-4, beta_end=0.02):
    return jnp.linspace(beta_start, beta_end, T)
""",
"cosine_betas": """
def cosine_betas(T, s=0.008, max_beta=0.999):
    t = jnp.arange(T + 1, dtype=jnp.float32)
    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2
    alpha_bar = f / f[0]
    return jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)
""",
"my_betas": """
def my_betas(T):
    u = jnp.arange(1, T + 1, dtype=jnp.float32) / T
    return jnp.clip(18.0 / T * u**2, 1e-5, 0.5)
""",
"alpha_bars": """
def alpha_bars(betas):
    return jnp.cumprod(1 - betas)
""",
"schedule_summary": """
def schedule_summary(betas):
    ab = alpha_bars(betas)
    ab_prev = jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])
    return ScheduleSummary(alpha_bars=ab, snr=ab / (1 - ab), posterior_variances=(1 - ab_prev) / (1 - ab) * betas)
""",
"diffuse": """
def diffuse(x0, betas, noises):
    def step(x_prev, beta_and_noise):
        beta, noise = beta_and_noise
        x_t = forward_step(x_prev, beta, noise)
        return x_t, x_t

    _, xs = jax.lax.scan(step, x0, (betas, noises))
    return jnp.concatenate([x0[None], xs], axis=0)
""",
"q_sample": """
def q_sample(x0, alpha_bar_t, noise):
    return jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise
""",
"posterior_mean": """
def posterior_mean(x0, x_t, beta_t, alpha_bar_t, alpha_bar_prev):
    alpha_t = 1 - beta_t
    coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
    coef_xt = jnp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return coef_x0 * x0 + coef_xt * x_t
""",
"posterior_variance": """
def posterior_variance(beta_t, alpha_bar_t, alpha_bar_prev):
    return (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
""",
"mean_loss": """
def mean_loss(mu_tilde, mu_theta, sigma2):
    return jnp.sum((mu_tilde - mu_theta) ** 2) / (2 * sigma2)
""",
"mean_from_noise": """
def mean_from_noise(x_t, eps, beta_t, alpha_bar_t):
    alpha_t = 1 - beta_t
    return (x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_t)
""",
"noise_loss_weight": """
def noise_loss_weight(beta_t, alpha_t, alpha_bar_t, sigma2):
    return beta_t**2 / (2 * sigma2 * alpha_t * (1 - alpha_bar_t))
""",
"noise_loss": """
def noise_loss(eps, eps_theta, beta_t, alpha_t, alpha_bar_t, sigma2):
    weight = noise_loss_weight(beta_t, alpha_t, alpha_bar_t, sigma2)
    return weight * jnp.sum((eps - eps_theta) ** 2)
""",
"simple_loss": """
def simple_loss(eps, eps_theta):
    return jnp.sum((eps - eps_theta) ** 2)
""",
"gaussian_reverse_mean_var": """
def gaussian_reverse_mean_var(x_t, t, betas, m, p):
    s = cu.schedules.make_schedule(betas)
    alpha_t, alpha_bar_t, alpha_bar_prev = s.alphas[t - 1], s.alpha_bars[t - 1], s.alpha_bars_prev[t - 1]
    v_prev = alpha_bar_prev * p**2 + 1 - alpha_bar_prev
    v_t = alpha_bar_t * p**2 + 1 - alpha_bar_t
    gain = jnp.sqrt(alpha_t) * v_prev / v_t
    mean = jnp.sqrt(alpha_bar_prev) * m + gain * (x_t - jnp.sqrt(alpha_bar_t) * m)
    variance = v_prev - jnp.sqrt(alpha_t) * v_prev * gain
    return mean, variance
""",
"sinusoidal_embedding": """
def sinusoidal_embedding(t, dim):
    half = dim // 2
    frequencies = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * frequencies
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
""",
"MLPDenoiser": """
class MLPDenoiser(nnx.Module):
    def __init__(self, dim=2, hidden=128, depth=3, time_dim=32, *, rngs):
        self.time_dim = time_dim
        sizes = [dim + time_dim] + [hidden] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x, t):
        h = jnp.concatenate([x, sinusoidal_embedding(t, self.time_dim)], axis=-1)
        for layer in self.hidden:
            h = jax.nn.silu(layer(h))
        return self.out(h)
""",
"ddpm_loss": """
def ddpm_loss(model, x0, t, noise, alpha_bars):
    alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise
    return jnp.mean((noise - model(x_t, t)) ** 2)
""",
"train_step": """
def train_step(model, optimizer, x0, t, noise, alpha_bars):
    loss, grads = nnx.value_and_grad(ddpm_loss)(model, x0, t, noise, alpha_bars)
    optimizer.update(model, grads)
    return loss
""",
"ddpm_step": """
def ddpm_step(model, x_t, t, z, betas, alpha_bars, sigmas):
    eps = model(x_t, jnp.full((x_t.shape[0],), t))
    beta_t, alpha_bar_t = betas[t - 1], alpha_bars[t - 1]
    mean = (x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(1 - beta_t)
    return mean + sigmas[t - 1] * z
""",
"sample": """
def sample(model, x_T, zs, betas, alpha_bars, sigmas):
    T = betas.shape[0]

    def body(x_t, t):
        z = jnp.where(t > 1, zs[t - 1], 0.0)
        x_prev = ddpm_step(model, x_t, t, z, betas, alpha_bars, sigmas)
        return x_prev, x_prev

    _, xs = jax.lax.scan(body, x_T, jnp.arange(T, 0, -1))
    return jnp.concatenate([x_T[None], xs])
""",
"ddim_step": """
def ddim_step(model, x_t, t, t_prev, alpha_bars, eta, z):
    eps = model(x_t, jnp.full((x_t.shape[0],), t))
    alpha_bar_t = alpha_bars[t - 1]
    alpha_bar_prev = jnp.where(t_prev > 0, alpha_bars[jnp.maximum(t_prev - 1, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t)
    sigma = eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))
    direction = jnp.sqrt(1 - alpha_bar_prev - sigma**2) * eps
    return jnp.sqrt(alpha_bar_prev) * x0_hat + direction + sigma * z
""",
"gaussian_fourier_embedding": """
def gaussian_fourier_embedding(t, W):
    angles = 2 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * W
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
""",
"TwoPixelUNet": """
class TwoPixelUNet(cu.models.TwoPixelUNet):
    def __call__(self, x, t, y):
        emb = self.embed(t, y)
        h = x[:, :, None]
        h1 = jax.nn.silu(self.norm1(self.conv1(h) + self.dense1(emb)[:, None, :]))
        h2 = jax.nn.silu(self.norm2(self.conv2(h1) + self.dense2(emb)[:, None, :]))
        h = jax.nn.silu(self.norm3(self.tconv2(h2) + self.dense3(emb)[:, None, :]))
        h = self.tconv1(jnp.concatenate([h, h1, x[:, None, :]], axis=-1))
        return h[:, 0, :]
""",
"drop_labels": """
def drop_labels(key, y, p_uncond):
    drop = jax.random.bernoulli(key, p_uncond, y.shape)
    return jnp.where(drop, -1, y)
""",
"guided_eps": """
def guided_eps(model, x_t, t, y, w):
    eps_cond = model(x_t, t, y)
    eps_uncond = model(x_t, t, jnp.full_like(y, -1))
    return (w + 1) * eps_cond - w * eps_uncond
""",
"guided_sample": """
def guided_sample(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
    T = betas.shape[0]

    def body(x_t, t):
        eps = guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, w)
        beta_t, alpha_bar_t = betas[t - 1], alpha_bars[t - 1]
        z = jnp.where(t > 1, zs[t - 1], 0.0)
        x_prev = (x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(1 - beta_t) + sigmas[t - 1] * z
        return x_prev, x_prev

    _, xs = jax.lax.scan(body, x_T, jnp.arange(T, 0, -1))
    return jnp.concatenate([x_T[None], xs])
""",
"conditional_train_step": """
def conditional_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    labels = drop_labels(key, y, p_uncond)
    alpha_bar_t = alpha_bars[t - 1][:, None]
    x_t = jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise

    def loss_fn(model):
        return jnp.mean((noise - model(x_t, t, labels)) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss
""",
"ResidualBlock": """
class ResidualBlock(nnx.Module):
    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(in_channels, num_groups=groups(in_channels), rngs=rngs)
        self.conv1 = Conv(in_channels, out_channels, rngs=rngs)
        self.emb_proj = Linear(emb_dim, out_channels, rngs=rngs)
        self.norm2 = GroupNorm(out_channels, num_groups=groups(out_channels), rngs=rngs)
        self.conv2 = Conv(out_channels, out_channels, rngs=rngs)
        self.skip = Conv(in_channels, out_channels, kernel_size=1, rngs=rngs) if in_channels != out_channels else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb_proj(jax.nn.silu(emb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))
""",
"SelfAttention": """
class SelfAttention(nnx.Module):
    def __init__(self, channels: int, num_heads: int = 4, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.norm = GroupNorm(channels, num_groups=groups(channels), rngs=rngs)
        self.qkv = Linear(channels, 3 * channels, rngs=rngs)
        self.out = Linear(channels, channels, rngs=rngs)

    def __call__(self, x):
        n, h, w, c = x.shape
        d = c // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(n, h * w, 3, self.num_heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        weights = jax.nn.softmax(jnp.einsum("nqhd,nkhd->nhqk", q, k) / jnp.sqrt(d), axis=-1)
        heads = jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, h, w, c)
        return x + self.out(heads)
""",
"guided_ddim_sample": """
def guided_ddim_sample(model, x_T, y, w, timesteps, alpha_bars):
    no_label = jnp.full_like(y, -1)

    def body(x_t, pair):
        t, t_prev = pair[0], pair[1]
        steps = jnp.full((x_t.shape[0],), t)
        eps = (w + 1) * model(x_t, steps, y) - w * model(x_t, steps, no_label)
        alpha_bar_t = alpha_bars[t - 1]
        alpha_bar_prev = jnp.where(t_prev > 0, alpha_bars[t_prev - 1], 1.0)
        x0_hat = (x_t - jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t)
        x_prev = jnp.sqrt(alpha_bar_prev) * x0_hat + jnp.sqrt(1 - alpha_bar_prev) * eps
        return x_prev, x_prev

    pairs = jnp.stack([timesteps[:-1], timesteps[1:]], axis=1)
    _, xs = jax.lax.scan(body, x_T, pairs)
    return jnp.concatenate([x_T[None], xs])
""",
}

OK = None  # ``names`` of a correct answer

ANSWERS = [
    # ------------------------------------------------------------ 01
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "x_prev * jnp.sqrt(1.0 - beta)", OK),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "jnp.exp(0.5 * jnp.log(1 - beta)) * x_prev", OK),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "jnp.sqrt(1 - beta**2) * x_prev", r"beta \*\* 2|beta\*\*2|squared"),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "(1 - jnp.sqrt(beta)) * x_prev", r"sqrt"),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "jnp.sqrt(1 - beta) + x_prev", r"\+|added|sum|multipl"),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "jnp.sqrt(1 + beta) * x_prev", r"1 \+ beta|sign|1 - beta"),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "jnp.sqrt(x_prev - beta * x_prev)", r"sqrt"),
    ("forward_mean", "jnp.sqrt(1 - beta) * x_prev", "x_prev / jnp.sqrt(1 - beta)", r"divid|quotient|/|1/"),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "beta * jnp.ones(())", OK),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "jnp.sqrt(beta)", r"sqrt|standard deviation"),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "1 - beta", r"1 - beta"),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "jnp.sqrt(1 - beta)", r"sqrt\(1 - beta\)"),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "beta * (1 - beta)", r"1 - beta|factor"),
    ("forward_variance", "jnp.asarray(beta, dtype=jnp.float32)", "jnp.asarray(beta, dtype=jnp.int32)", r"dtype|integer|int"),
    ("forward_step", "forward_mean(x_prev, beta) + jnp.sqrt(forward_variance(beta)) * noise",
     "jnp.sqrt(1 - beta) * x_prev + jnp.sqrt(beta) * noise", OK),
    ("forward_step", "jnp.sqrt(forward_variance(beta)) * noise", "forward_variance(beta) * noise", r"sqrt|standard deviation|variance"),
    ("forward_step", "forward_mean(x_prev, beta) + ", "forward_mean(x_prev, beta) - ", r"sign|minus|-|subtract"),
    ("forward_step", "forward_mean(x_prev, beta) + ", "x_prev + ", r"mean|sqrt\(1 - beta\)|scal"),
    ("forward_step", "jnp.sqrt(forward_variance(beta)) * noise", "jnp.sqrt(1 - beta) * noise", r"1 - beta|sqrt\(beta\)|noise"),
    ("forward_step", "jnp.sqrt(forward_variance(beta)) * noise", "noise", r"noise|sqrt\(beta\)|scale"),
    ("forward_step", "forward_mean(x_prev, beta) + jnp.sqrt(forward_variance(beta)) * noise",
     "jnp.sqrt(1 - beta) * (x_prev + jnp.sqrt(beta) * noise)", r"noise|sqrt\(1 - beta\)|mean"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "beta_start + (beta_end - beta_start) * jnp.linspace(0.0, 1.0, T)", OK),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.linspace(beta_start, beta_end, T + 1)[1:]", r"shape|first|off.by.one|T \+ 1|linspace"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.linspace(beta_start, beta_end, T + 1)[:-1]", r"T \+ 1|step|linspace|spacing"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "beta_start + (beta_end - beta_start) * jnp.arange(T) / T", r"T - 1|/ T|spacing|linspace|endpoint"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.linspace(beta_end, beta_start, T)", r"revers|swap|decreas|order"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.linspace(0.0, beta_end, T)", r"beta_start|0\.0|start"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.sqrt(jnp.linspace(beta_start, beta_end, T))", r"sqrt"),
    ("linear_betas", "jnp.linspace(beta_start, beta_end, T)", "jnp.linspace(beta_start**0.5, beta_end**0.5, T) ** 2", r"\*\* 2|square|quadratic|0\.5"),
    ("cosine_betas", "    t = jnp.arange(T + 1, dtype=jnp.float32)\n    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2\n    alpha_bar = f / f[0]\n    return jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)",
     "    def ab(u):\n        return jnp.cos((u + s) / (1 + s) * jnp.pi / 2) ** 2\n    i = jnp.arange(T, dtype=jnp.float32)\n    return jnp.minimum(1 - ab((i + 1) / T) / ab(i / T), max_beta)", OK),
    ("cosine_betas", "jnp.arange(T + 1, dtype=jnp.float32)\n    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2\n    alpha_bar = f / f[0]\n    return jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)",
     "jnp.arange(T + 1, dtype=jnp.float32)\n    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2\n    alpha_bar = f / f[0]\n    return jnp.asarray([jnp.minimum(1 - alpha_bar[i + 1] / alpha_bar[i], max_beta) for i in range(T)])", OK),
    ("cosine_betas", ") ** 2", ")", r"\*\* 2|square"),
    ("cosine_betas", "(t / T + s) / (1 + s)", "(t / T + s)", r"1 \+ s|\(1 \+ s\)"),
    ("cosine_betas", "jnp.pi / 2", "jnp.pi", r"pi / 2|pi|factor"),
    ("cosine_betas", "jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)", "1 - alpha_bar[1:] / alpha_bar[:-1]", r"max_beta|minimum|clip"),
    ("cosine_betas", "1 - alpha_bar[1:] / alpha_bar[:-1]", "1 - alpha_bar[:-1] / alpha_bar[1:]", r"swap|alpha_bar\[:-1\]|alpha_bar\[1:\]|revers|ratio"),
    ("cosine_betas", "1 - alpha_bar[1:] / alpha_bar[:-1]", "alpha_bar[1:] / alpha_bar[:-1]", r"1 -|1 - "),
    ("cosine_betas", "1 - alpha_bar[1:] / alpha_bar[:-1]", "1 - alpha_bar[1:]", r"alpha_bar\[:-1\]|ratio|divid|/"),
    ("cosine_betas", "jnp.arange(T + 1, dtype=jnp.float32)", "jnp.arange(T, dtype=jnp.float32)", r"shape|T \+ 1|arange|first axis|entries"),
    ("cosine_betas", "jnp.arange(T + 1, dtype=jnp.float32)", "jnp.arange(1, T + 2, dtype=jnp.float32)", r"shift|t \+ 1|index|off.by.one|arange|start"),
    ("my_betas", "18.0 / T * u**2", "18.0 / T * u**3 * 1.5", OK),
    ("my_betas", "u**2", "(1 - u) ** 2", r"increas|decreas"),
    ("my_betas", "18.0 / T", "0.18 / T", r"alpha_bar|small|noise"),
    ("my_betas", "1e-5, 0.5)", "1e-5, 1.5)", r"\(0, 1\)|below 1|less than 1|range|< 1|at most"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.exp(jnp.cumsum(jnp.log1p(-betas)))", OK),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.cumprod(jnp.sqrt(1 - betas))", r"sqrt"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.cumsum(jnp.log(1 - betas))", r"exp|log"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "1 - jnp.cumprod(betas)", r"1 - |cumprod\(betas\)"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.cumprod(betas)", r"1 - betas|betas"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "1 - betas", r"cumprod|cumulative|product"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.concatenate([jnp.ones(1), jnp.cumprod(1 - betas)[:-1]])", r"shift|t - 1|off.by.one|one step"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.cumsum(1 - betas)", r"cumsum|product|cumprod"),
    ("alpha_bars", "jnp.cumprod(1 - betas)", "jnp.prod(1 - betas) * jnp.ones_like(betas)", r"cumprod|cumulative|prod"),
    ("schedule_summary", "ab = alpha_bars(betas)", "ab = jnp.exp(jnp.cumsum(jnp.log1p(-betas)))", OK),
    ("schedule_summary", "snr=ab / (1 - ab)", "snr=(1 - ab) / ab", r"snr|invert|swap|1 - ab"),
    ("schedule_summary", "snr=ab / (1 - ab)", "snr=jnp.sqrt(ab / (1 - ab))", r"sqrt|snr"),
    ("schedule_summary", "ab_prev = jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])", "ab_prev = jnp.concatenate([ab[:1], ab[:-1]])", r"alpha_bar_0|ones|1\b|first"),
    ("schedule_summary", "ab_prev = jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])", "ab_prev = jnp.roll(ab, 1)", r"roll|alpha_bar_0|wrap|first"),
    ("schedule_summary", "(1 - ab_prev) / (1 - ab) * betas", "(1 - ab) / (1 - ab_prev) * betas", r"swap|ab_prev|prev|invert|upside"),
    ("schedule_summary", "(1 - ab_prev) / (1 - ab) * betas", "betas", r"posterior|factor|beta_tilde|betas"),
    ("schedule_summary", "alpha_bars=ab, snr=ab / (1 - ab), posterior_variances=(1 - ab_prev) / (1 - ab) * betas",
     "alpha_bars=ab, snr=(1 - ab_prev) / (1 - ab) * betas, posterior_variances=ab / (1 - ab)", r"swap|order|snr|posterior"),
    ("schedule_summary", "ab_prev = jnp.concatenate([jnp.ones(1, ab.dtype), ab[:-1]])", "ab_prev = jnp.concatenate([ab[1:], jnp.zeros(1, ab.dtype)])", r"prev|shift|t \+ 1|next|index"),
    ("diffuse", "x_t = forward_step(x_prev, beta, noise)", "x_t = jnp.sqrt(1 - beta) * x_prev + jnp.sqrt(beta) * noise", OK),
    ("diffuse", "return jnp.concatenate([x0[None], xs], axis=0)", "return xs", r"x0|first|shape|T \+ 1|prepend|include"),
    ("diffuse", "x_t = forward_step(x_prev, beta, noise)", "x_t = forward_step(x0, beta, noise)", r"x0|x_prev|carry"),
    ("diffuse", "return x_t, x_t", "return x_t, x_prev", r"x_prev|x_\{t-1\}|state after|shift|one step|off.by.one"),
    ("diffuse", "(betas, noises)", "(betas[::-1], noises)", r"revers|betas\[::-1\]|order"),
    ("diffuse", "x_t = forward_step(x_prev, beta, noise)", "x_t = jnp.sqrt(1 - beta) * x_prev + beta * noise", r"sqrt|beta \* noise|standard deviation"),
    ("q_sample", "jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise", "jnp.sqrt(alpha_bar_t) * (x0 + jnp.sqrt(1 / alpha_bar_t - 1) * noise)", OK),
    ("q_sample", "jnp.sqrt(alpha_bar_t) * x0", "alpha_bar_t * x0", r"sqrt"),
    ("q_sample", "jnp.sqrt(1 - alpha_bar_t) * noise", "(1 - alpha_bar_t) * noise", r"sqrt"),
    ("q_sample", "jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise", "jnp.sqrt(1 - alpha_bar_t) * x0 + jnp.sqrt(alpha_bar_t) * noise", r"swap"),
    ("q_sample", "jnp.sqrt(1 - alpha_bar_t) * noise", "jnp.sqrt(alpha_bar_t) * noise", r"1 - alpha_bar|noise"),
    ("q_sample", " + jnp.sqrt(1 - alpha_bar_t) * noise", " - jnp.sqrt(1 - alpha_bar_t) * noise", r"sign|minus|-"),
    # ------------------------------------------------------------ 02
    ("posterior_mean", "coef_x0 * x0 + coef_xt * x_t",
     "(jnp.sqrt(alpha_bar_prev) * beta_t * x0 + jnp.sqrt(alpha_t) * (1 - alpha_bar_prev) * x_t) / (1 - alpha_bar_t)", OK),
    ("posterior_mean", "coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_t", "coef_x0 = alpha_bar_prev * beta_t", r"sqrt"),
    ("posterior_mean", "coef_xt = jnp.sqrt(alpha_t)", "coef_xt = alpha_t", r"sqrt"),
    ("posterior_mean", "coef_x0 * x0 + coef_xt * x_t", "coef_x0 * x_t + coef_xt * x0", r"swap|x0|x_t"),
    ("posterior_mean", "coef_x0 = jnp.sqrt(alpha_bar_prev)", "coef_x0 = jnp.sqrt(alpha_bar_t)", r"alpha_bar_t|alpha_bar_prev|swap"),
    ("posterior_mean", "coef_xt = jnp.sqrt(alpha_t) * (1 - alpha_bar_prev)", "coef_xt = jnp.sqrt(alpha_t) * (1 - alpha_bar_t)", r"alpha_bar_prev|alpha_bar_t"),
    ("posterior_mean", "alpha_t = 1 - beta_t", "alpha_t = beta_t", r"alpha_t|1 - beta"),
    ("posterior_mean", "coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)", "coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_prev)", r"alpha_bar_prev|alpha_bar_t"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "beta_t * (1 - alpha_bar_prev) / (1 - alpha_bar_t)", OK),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "(1 - alpha_bar_t) / (1 - alpha_bar_prev) * beta_t", r"swap|invert|alpha_bar"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "(1 - alpha_bar_prev) / (1 - alpha_bar_t)", r"beta_t|beta"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "beta_t", r"factor|beta_t|posterior"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t)", r"sqrt|standard deviation"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - beta_t)", r"1 - beta|alpha_t|beta_t"),
    ("posterior_variance", "(1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t", "alpha_bar_prev / alpha_bar_t * beta_t", r"1 - |alpha_bar"),
    ("mean_loss", "jnp.sum((mu_tilde - mu_theta) ** 2) / (2 * sigma2)", "0.5 * jnp.sum(jnp.square(mu_theta - mu_tilde)) / sigma2", OK),
    ("mean_loss", "jnp.sum(", "jnp.mean(", r"mean|sum|factor"),
    ("mean_loss", "/ (2 * sigma2)", "/ 2 * sigma2", r"parenthes|sigma2|\* sigma2|/ 2"),
    ("mean_loss", "/ (2 * sigma2)", "/ (2 * sigma2**2)", r"sigma2|square|\*\* 2"),
    ("mean_loss", "/ (2 * sigma2)", "/ sigma2", r"factor|2|half"),
    ("mean_loss", "(mu_tilde - mu_theta) ** 2", "jnp.abs(mu_tilde - mu_theta)", r"abs|square|\*\* 2"),
    ("mean_loss", "/ (2 * sigma2)", "/ (2 * jnp.sqrt(sigma2))", r"sqrt|sigma"),
    ("mean_from_noise", "(x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_t)",
     "x_t / jnp.sqrt(alpha_t) - beta_t / (jnp.sqrt(alpha_t) * jnp.sqrt(1 - alpha_bar_t)) * eps", OK),
    ("mean_from_noise", "jnp.sqrt(1 - alpha_bar_t) * eps", "(1 - alpha_bar_t) * eps", r"sqrt"),
    ("mean_from_noise", "/ jnp.sqrt(alpha_t)", "/ alpha_t", r"sqrt"),
    ("mean_from_noise", "/ jnp.sqrt(alpha_t)", "* jnp.sqrt(alpha_t)", r"divid|multipl|\*|/"),
    ("mean_from_noise", "(x_t - beta_t", "(x_t + beta_t", r"sign|\+|-|subtract"),
    ("mean_from_noise", "(x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_t)", "x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps / jnp.sqrt(alpha_t)", r"parenthes|x_t|sqrt\(alpha_t\)|/"),
    ("mean_from_noise", "beta_t / jnp.sqrt(1 - alpha_bar_t) * eps", "jnp.sqrt(1 - alpha_bar_t) * eps", r"beta_t|beta"),
    ("mean_from_noise", "jnp.sqrt(1 - alpha_bar_t)", "jnp.sqrt(1 - alpha_t)", r"alpha_bar_t|alpha_t"),
    ("noise_loss_weight", "beta_t**2 / (2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(beta_t / (1 - alpha_bar_t)) * beta_t / (2 * sigma2 * alpha_t)", OK),
    ("noise_loss_weight", "beta_t**2", "beta_t", r"beta_t\*\*2|beta_t \*\* 2|square"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(2 * sigma2 * alpha_t * alpha_bar_t)", r"1 - alpha_bar|alpha_bar"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(2 * alpha_t * (1 - alpha_bar_t)) * sigma2", r"sigma2|multipl|divid"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(2 * sigma2 * (1 - alpha_bar_t))", r"alpha_t"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(sigma2 * alpha_t * (1 - alpha_bar_t))", r"factor|2|half"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(2 * sigma2 * jnp.sqrt(alpha_t) * (1 - alpha_bar_t))", r"sqrt|alpha_t"),
    ("noise_loss_weight", "(2 * sigma2 * alpha_t * (1 - alpha_bar_t))", "(2 * sigma2**2 * alpha_t * (1 - alpha_bar_t))", r"sigma2|square"),
    ("noise_loss", "weight * jnp.sum((eps - eps_theta) ** 2)", "jnp.sum(weight * (eps_theta - eps) ** 2)", OK),
    ("noise_loss", "jnp.sum((eps", "jnp.mean((eps", r"mean|sum|factor"),
    ("noise_loss", "weight * jnp.sum", "jnp.sum", r"weight|lambda|factor"),
    ("noise_loss", "weight * jnp.sum((eps - eps_theta) ** 2)", "weight * jnp.sum(eps - eps_theta) ** 2", r"square|sum|\*\* 2|parenthes"),
    ("noise_loss", "weight * jnp.sum((eps - eps_theta) ** 2)", "weight * jnp.sqrt(jnp.sum((eps - eps_theta) ** 2))", r"sqrt|norm"),
    ("noise_loss", "weight = noise_loss_weight(beta_t, alpha_t, alpha_bar_t, sigma2)", "weight = noise_loss_weight(beta_t, alpha_bar_t, alpha_t, sigma2)", r"swap|alpha_t|alpha_bar_t|argument|order"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.vdot(eps - eps_theta, eps - eps_theta)", OK),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.mean((eps - eps_theta) ** 2)", r"mean|sum|factor"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.sum(jnp.abs(eps - eps_theta))", r"abs|square|\*\* 2"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.sqrt(jnp.sum((eps - eps_theta) ** 2))", r"sqrt|norm"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.sum(eps - eps_theta) ** 2", r"square|sum|\*\* 2"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.sum(eps**2 - eps_theta**2)", r"square|\*\* 2|cross"),
    ("simple_loss", "jnp.sum((eps - eps_theta) ** 2)", "jnp.sum((eps - eps_theta) ** 2, axis=-1)", r"shape|axis|scalar|sum"),
    # ------------------------------------------------------------ 03
    ("gaussian_reverse_mean_var", "variance = v_prev - jnp.sqrt(alpha_t) * v_prev * gain", "variance = v_prev * (1 - alpha_t) / v_t", OK),
    ("gaussian_reverse_mean_var", "variance = v_prev - jnp.sqrt(alpha_t) * v_prev * gain", "variance = v_prev - v_prev * gain", r"sqrt|alpha_t|variance"),
    ("gaussian_reverse_mean_var", "v_prev = alpha_bar_prev * p**2 + 1 - alpha_bar_prev", "v_prev = alpha_bar_prev * p + 1 - alpha_bar_prev", r"p\*\*2|p \*\* 2|square|p\b"),
    ("gaussian_reverse_mean_var", "gain = jnp.sqrt(alpha_t) * v_prev / v_t", "gain = jnp.sqrt(alpha_t) * v_t / v_prev", r"swap|v_t|v_prev|invert"),
    ("gaussian_reverse_mean_var", "mean = jnp.sqrt(alpha_bar_prev) * m + gain * (x_t - jnp.sqrt(alpha_bar_t) * m)", "mean = jnp.sqrt(alpha_bar_prev) * m + gain * (x_t - m)", r"sqrt|alpha_bar_t|m\b"),
    ("gaussian_reverse_mean_var", "s.alpha_bars_prev[t - 1]", "s.alpha_bars[t - 2]", r"t - 2|alpha_bar_0|index|prev|wrap"),
    ("gaussian_reverse_mean_var", "alpha_t, alpha_bar_t, alpha_bar_prev = s.alphas[t - 1], s.alpha_bars[t - 1], s.alpha_bars_prev[t - 1]",
     "alpha_t, alpha_bar_t, alpha_bar_prev = s.alphas[t], s.alpha_bars[t], s.alpha_bars_prev[t]", r"t - 1|index|off.by.one|\[t\]"),
    ("gaussian_reverse_mean_var", "return mean, variance", "return mean, jnp.sqrt(variance)", r"sqrt|standard deviation"),
    ("gaussian_reverse_mean_var", "mean = jnp.sqrt(alpha_bar_prev) * m + gain", "mean = m + gain", r"sqrt|alpha_bar_prev|m\b"),
    # ------------------------------------------------------------ 04
    ("sinusoidal_embedding", "jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)",
     "10000.0 ** (-jnp.arange(half, dtype=jnp.float32) / half)", OK),
    ("sinusoidal_embedding", "[jnp.sin(angles), jnp.cos(angles)]", "[jnp.cos(angles), jnp.sin(angles)]", r"swap|cos|sin|order"),
    ("sinusoidal_embedding", "/ half)", "/ (half - 1))", r"half - 1|half|frequenc|linspace"),
    ("sinusoidal_embedding", "jnp.exp(-jnp.log(10000.0)", "jnp.exp(jnp.log(10000.0)", r"sign|-|negative|frequenc"),
    ("sinusoidal_embedding", "jnp.log(10000.0)", "10000.0", r"log"),
    ("sinusoidal_embedding", "jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)", "jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], -1)", r"interleav|order|stack|concatenat"),
    ("sinusoidal_embedding", "jnp.asarray(t, jnp.float32)[..., None] * frequencies", "jnp.asarray(t, jnp.float32)[..., None] / frequencies", r"divid|multipl|/|\*"),
    ("ddpm_loss", "x_t = jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise", "x_t = jnp.sqrt(alpha_bar_t) * (x0 + jnp.sqrt(1 / alpha_bar_t - 1) * noise)", OK),
    ("ddpm_loss", "alpha_bars[t - 1]", "alpha_bars[t]", r"t - 1|index|off.by.one"),
    ("ddpm_loss", "jnp.mean((noise - model(x_t, t)) ** 2)", "jnp.sum((noise - model(x_t, t)) ** 2)", r"sum|mean|factor"),
    ("ddpm_loss", "model(x_t, t)", "model(x0, t)", r"x0|x_t"),
    ("ddpm_loss", "jnp.sqrt(1 - alpha_bar_t) * noise", "(1 - alpha_bar_t) * noise", r"sqrt"),
    ("ddpm_loss", "(noise - model(x_t, t))", "(x0 - model(x_t, t))", r"x0|noise|target"),
    ("ddpm_loss", "model(x_t, t)", "model(x_t, t - 1)", r"t - 1|time|index"),
    ("ddpm_step", "mean = (x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(1 - beta_t)",
     "mean = (x_t - (1 - (1 - beta_t)) / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(1 - beta_t)", OK),
    ("ddpm_step", "betas[t - 1], alpha_bars[t - 1]", "betas[t], alpha_bars[t]", r"t - 1|index|off.by.one"),
    ("ddpm_step", "jnp.sqrt(1 - alpha_bar_t) * eps", "(1 - alpha_bar_t) * eps", r"sqrt"),
    ("ddpm_step", "sigmas[t - 1] * z", "sigmas[t - 1] ** 2 * z", r"sigma|square|\*\* 2|variance"),
    ("ddpm_step", "return mean + sigmas[t - 1] * z", "return mean", r"noise|sigma|z\b"),
    ("ddpm_step", "/ jnp.sqrt(1 - beta_t)", "/ jnp.sqrt(1 - alpha_bar_t)", r"alpha_bar_t|beta_t|alpha_t"),
    ("ddpm_step", "model(x_t, jnp.full((x_t.shape[0],), t))", "model(x_t, jnp.full((x_t.shape[0],), t - 1))", r"t - 1|time|index"),
    ("ddpm_step", "(x_t - beta_t", "(x_t + beta_t", r"sign|\+|-|subtract"),
    ("sample", "    T = betas.shape[0]\n\n    def body(x_t, t):\n        z = jnp.where(t > 1, zs[t - 1], 0.0)\n        x_prev = ddpm_step(model, x_t, t, z, betas, alpha_bars, sigmas)\n        return x_prev, x_prev\n\n    _, xs = jax.lax.scan(body, x_T, jnp.arange(T, 0, -1))",
     "    T = betas.shape[0]\n\n    def body(x_t, i):\n        t = T - i\n        z = zs[t - 1] * (t > 1)\n        x_prev = ddpm_step(model, x_t, t, z, betas, alpha_bars, sigmas)\n        return x_prev, x_prev\n\n    _, xs = jax.lax.scan(body, x_T, jnp.arange(T))", OK),
    ("sample", "z = jnp.where(t > 1, zs[t - 1], 0.0)", "z = zs[t - 1]", r"last step|t = 1|t > 1|noise"),
    ("sample", "z = jnp.where(t > 1, zs[t - 1], 0.0)", "z = jnp.zeros_like(x_t)", r"noise|z\b|zs"),
    ("sample", "jnp.arange(T, 0, -1)", "jnp.arange(1, T + 1)", r"revers|order|T down|descend|increas"),
    ("sample", "jnp.arange(T, 0, -1)", "jnp.arange(T - 1, -1, -1)", r"0-based|t - 1|index|off.by.one|shift|T - 1"),
    ("sample", "return jnp.concatenate([x_T[None], xs])", "return xs", r"x_T|first|shape|T \+ 1|prepend|include"),
    ("sample", "z = jnp.where(t > 1, zs[t - 1], 0.0)", "z = jnp.where(t > 1, zs[T - t], 0.0)", r"zs|noise|index|order|revers"),
    # (the reference calls its carry `x`: "`(x_prev, x)` where the reference has `(x_prev, x_prev)`" names this slip)
    ("sample", "return x_prev, x_prev", "return x_prev, x_t", r"x_t|shift|one step|off.by.one|\(x_prev, x\)"),
    ("ddim_step", "    sigma = eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))",
     "    sigma = eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) * jnp.sqrt(1 - alpha_bar_t / alpha_bar_prev)", OK),
    ("ddim_step", "alpha_bars[jnp.maximum(t_prev - 1, 0)]", "alpha_bars[t_prev]", r"t_prev - 1|index|off.by.one|t_prev"),
    ("ddim_step", "direction = jnp.sqrt(1 - alpha_bar_prev - sigma**2) * eps", "direction = jnp.sqrt(1 - alpha_bar_prev) * eps", r"sigma|direction"),
    ("ddim_step", "+ sigma * z", "+ sigma**2 * z", r"sigma|square|\*\* 2|variance"),
    ("ddim_step", "+ sigma * z", "", r"noise|sigma|z\b"),
    ("ddim_step", "jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev))", "jnp.sqrt((1 - alpha_bar_t) / (1 - alpha_bar_prev) * (1 - alpha_bar_t / alpha_bar_prev))", r"swap|invert|alpha_bar_prev|alpha_bar_t|sigma"),
    ("ddim_step", "/ jnp.sqrt(alpha_bar_t)", "/ alpha_bar_t", r"sqrt"),
    ("ddim_step", "jnp.sqrt(alpha_bar_prev) * x0_hat", "alpha_bar_prev * x0_hat", r"sqrt"),
    ("ddim_step", "eta * jnp.sqrt(", "jnp.sqrt(", r"eta"),
    ("gaussian_fourier_embedding", "2 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * W", "jnp.asarray(t, jnp.float32)[..., None] * (2 * jnp.pi * W)", OK),
    ("gaussian_fourier_embedding", "2 * jnp.pi * ", "jnp.pi * ", r"2|pi|factor"),
    ("gaussian_fourier_embedding", "2 * jnp.pi * ", "", r"2 \* pi|pi|2 pi"),
    ("gaussian_fourier_embedding", "[jnp.sin(angles), jnp.cos(angles)]", "[jnp.cos(angles), jnp.sin(angles)]", r"swap|cos|sin|order"),
    ("gaussian_fourier_embedding", "jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)", "jnp.sin(angles)", r"cos|shape|half"),
    ("gaussian_fourier_embedding", "[..., None] * W", "[..., None] / W", r"divid|/|multipl"),
    ("drop_labels", "jnp.where(drop, -1, y)", "jnp.where(drop, -1, y).astype(y.dtype)", OK),
    ("drop_labels", "jnp.where(drop, -1, y)", "jnp.where(drop, y, -1)", r"invert|swap|keep|1 - p|opposite|revers"),
    ("drop_labels", "jax.random.bernoulli(key, p_uncond, y.shape)", "jax.random.bernoulli(key, 1 - p_uncond, y.shape)", r"1 - p|invert|opposite|probab"),
    ("drop_labels", "jnp.where(drop, -1, y)", "jnp.where(drop, 0, y)", r"-1|no label|0"),
    ("drop_labels", "jax.random.bernoulli(key, p_uncond, y.shape)", "jax.random.uniform(key, y.shape) > p_uncond", r"invert|1 - p|>|<|opposite|revers"),
    ("drop_labels", "jax.random.bernoulli(key, p_uncond, y.shape)", "jax.random.bernoulli(key, p_uncond)", r"one|same|every label|all|shape|scalar|single"),
    ("drop_labels", "jnp.where(drop, -1, y)", "y * (1 - drop) - drop", OK),
    ("drop_labels", "jnp.where(drop, -1, y)", "jnp.full_like(y, -1)", r"every|all|drop"),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "eps_uncond + (w + 1) * (eps_cond - eps_uncond)", OK),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "eps_uncond + w * (eps_cond - eps_uncond)", r"w \+ 1|guidance|weight|w\b"),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "eps_cond + w * (eps_cond - eps_uncond)", OK),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "w * eps_cond - (w - 1) * eps_uncond", r"w \+ 1|w - 1|guidance|w\b"),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "(w + 1) * eps_uncond - w * eps_cond", r"swap|cond|uncond"),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "(w + 1) * eps_cond + w * eps_uncond", r"sign|\+|-"),
    ("guided_eps", "jnp.full_like(y, -1)", "jnp.zeros_like(y)", r"-1|no label|label 0|0"),
    ("guided_eps", "(w + 1) * eps_cond - w * eps_uncond", "eps_cond", r"guidance|w\b|uncond"),
    ("guided_sample", "eps = guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, w)",
     "steps = jnp.full((x_t.shape[0],), t)\n        e_c, e_u = model(x_t, steps, y), model(x_t, steps, jnp.full_like(y, -1))\n        eps = e_u + (w + 1) * (e_c - e_u)", OK),
    ("guided_sample", "eps = guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, w)",
     "steps = jnp.full((x_t.shape[0],), t)\n        e_c, e_u = model(x_t, steps, y), model(x_t, steps, jnp.full_like(y, -1))\n        eps = e_u + w * (e_c - e_u)", r"w \+ 1|guidance|weight|w\b"),
    ("guided_sample", "eps = guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, w)", "eps = model(x_t, jnp.full((x_t.shape[0],), t), y)", r"guidance|w\b|uncond"),
    ("guided_sample", "z = jnp.where(t > 1, zs[t - 1], 0.0)", "z = zs[t - 1]", r"last step|t = 1|t > 1|noise"),
    ("guided_sample", "betas[t - 1], alpha_bars[t - 1]", "betas[t - 1], alpha_bars[t - 2]", r"t - 2|t - 1|index|alpha_bar"),
    ("guided_sample", "sigmas[t - 1] * z", "sigmas[t - 1] ** 2 * z", r"sigma|square|\*\* 2|variance"),
    ("guided_sample", "/ jnp.sqrt(1 - beta_t)", "/ (1 - beta_t)", r"sqrt"),
    ("guided_sample", "jnp.arange(T, 0, -1)", "jnp.arange(1, T + 1)", r"revers|order|descend|increas"),
    ("guided_sample", "guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, w)", "guided_eps(model, x_t, jnp.full((x_t.shape[0],), t), y, -w)", r"sign|w\b|-w"),
    ("guided_ddim_sample", "eps = (w + 1) * model(x_t, steps, y) - w * model(x_t, steps, no_label)",
     "e_u = model(x_t, steps, no_label)\n        eps = e_u + (w + 1) * (model(x_t, steps, y) - e_u)", OK),
    ("guided_ddim_sample", "eps = (w + 1) * model(x_t, steps, y) - w * model(x_t, steps, no_label)", "eps = model(x_t, steps, y)", r"guidance|w\b|uncond"),
    ("guided_ddim_sample", "x0_hat = (x_t - jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t)",
     "x0_hat = jnp.clip((x_t - jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_bar_t), -1, 1)", r"clip"),
    ("guided_ddim_sample", "alpha_bars[t_prev - 1], 1.0)", "alpha_bars[t_prev - 1], 0.0)", r"alpha_bar_0|1\.0|0\.0|t_prev = 0|last"),
    ("guided_ddim_sample", "jnp.where(t_prev > 0, alpha_bars[t_prev - 1], 1.0)", "alpha_bars[t_prev - 1]", r"wrap|t_prev = 0|alpha_bar_0|where|-1"),
    ("guided_ddim_sample", "alpha_bar_t = alpha_bars[t - 1]", "alpha_bar_t = alpha_bars[t]", r"t - 1|index|off.by.one"),
    ("guided_ddim_sample", "jnp.sqrt(1 - alpha_bar_prev) * eps", "jnp.sqrt(1 - alpha_bar_t) * eps", r"alpha_bar_prev|alpha_bar_t"),
    ("guided_ddim_sample", "(w + 1) * model(x_t, steps, y) - w * model(x_t, steps, no_label)", "w * model(x_t, steps, y) - (w - 1) * model(x_t, steps, no_label)", r"w \+ 1|w - 1|w\b|guidance"),
    ("guided_ddim_sample", "return jnp.concatenate([x_T[None], xs])", "return xs", r"x_T|first|shape|prepend|include"),
    # ------------------------------------------------------------ classes and training steps
    ("MLPDenoiser", "h = jax.nn.silu(layer(h))", "h = jax.nn.relu(layer(h))", r"silu|relu|activation"),
    ("MLPDenoiser", "[x, sinusoidal_embedding(t, self.time_dim)]", "[sinusoidal_embedding(t, self.time_dim), x]", OK),  # accepted by design
    ("MLPDenoiser", "for layer in self.hidden:", "for layer in self.hidden[:-1]:", r"layer|hidden|depth"),
    ("MLPDenoiser", "return self.out(h)", "return jax.nn.silu(self.out(h))", r"last|output|activation|silu"),
    ("MLPDenoiser", "sinusoidal_embedding(t, self.time_dim)", "sinusoidal_embedding(t / 1000, self.time_dim)", r"time embedding|scale|t / 1000|1000"),
    ("MLPDenoiser", "return self.out(h)", "return x - self.out(h)", r"residual|skip|subtract"),
    ("train_step", "return loss", "return ddpm_loss(model, x0, t, noise, alpha_bars)", r"after|loss"),
    ("train_step", "optimizer.update(model, grads)", "optimizer.update(model, jax.tree.map(lambda g: -g, grads))", r"ascent|sign|minus"),
    ("train_step", "    optimizer.update(model, grads)\n", "", r"update|no update|unchanged"),
    ("train_step", "optimizer.update(model, grads)", "optimizer.update(model, jax.tree.map(lambda g: 0.5 * g, grads))", r"half|0\.5|scaled"),
    ("train_step", "nnx.value_and_grad(ddpm_loss)(model, x0, t, noise, alpha_bars)", "nnx.value_and_grad(ddpm_loss)(model, x0, t, noise, 1 - alpha_bars)", r"alpha_bar"),
    ("conditional_train_step", "labels = drop_labels(key, y, p_uncond)", "labels = y", r"dropout|drop|label"),
    ("conditional_train_step", "labels = drop_labels(key, y, p_uncond)", "labels = jnp.where(jax.random.bernoulli(key, p_uncond, y.shape), y, -1)", r"invert|dropout|drop|1 - p|opposite"),
    ("conditional_train_step", "return loss", "return loss_fn(model)", r"after|loss"),
    ("conditional_train_step", "alpha_bars[t - 1][:, None]", "alpha_bars[t][:, None]", r"t - 1|index|off.by.one"),
    ("conditional_train_step", "model(x_t, t, labels)", "model(x_t, t, y)", r"dropout|drop|label"),
    ("TwoPixelUNet", "h = jax.nn.silu(self.norm3(self.tconv2(h2) + self.dense3(emb)[:, None, :]))", "h = jax.nn.silu(self.norm3(self.tconv2(h2)))", r"embedding|dense3|time"),
    ("TwoPixelUNet", "jnp.concatenate([h, h1, x[:, None, :]], axis=-1)", "jnp.concatenate([h1, h, x[:, None, :]], axis=-1)", r"order|concatenat|skip|swap"),
    ("TwoPixelUNet", "h1 = jax.nn.silu(self.norm1(self.conv1(h) + self.dense1(emb)[:, None, :]))", "h1 = self.norm1(self.conv1(h) + self.dense1(emb)[:, None, :])", r"silu|activation"),
    ("TwoPixelUNet", "h2 = jax.nn.silu(self.norm2(", "h2 = jax.nn.relu(self.norm2(", r"silu|relu|activation"),
    ("ResidualBlock", "return h + (x if self.skip is None else self.skip(x))", "return h", r"skip|residual"),
    ("ResidualBlock", "h = h + self.emb_proj(jax.nn.silu(emb))[:, None, None, :]", "h = h + self.emb_proj(emb)[:, None, None, :]", r"silu|embedding|activation"),
    ("ResidualBlock", "h = self.conv1(jax.nn.silu(self.norm1(x)))", "h = jax.nn.silu(self.norm1(self.conv1(x)))", r"order|norm|conv"),
    ("ResidualBlock", "        h = h + self.emb_proj(jax.nn.silu(emb))[:, None, None, :]\n", "", r"embedding|emb"),
    ("SelfAttention", "/ jnp.sqrt(d)", "", r"sqrt|scale|d\b"),
    ("SelfAttention", "/ jnp.sqrt(d)", "/ d", r"sqrt|scale"),
    ("SelfAttention", "axis=-1)", "axis=-2)", r"softmax|axis"),
    ("SelfAttention", "return x + self.out(heads)", "return self.out(heads)", r"residual|skip|x\b"),
    ("SelfAttention", "q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]", "q, k, v = qkv[:, :, 1], qkv[:, :, 0], qkv[:, :, 2]", r"swap|q\b|k\b|order|query|key"),
]

ANSWERS += [
    ("diffuse", "_, xs = jax.lax.scan(step, x0, (betas, noises))", "_, xs = jax.lax.scan(step, x0, (jnp.cumsum(betas), noises))", r"cumsum|cumulative|betas"),
    ("q_sample", "jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise", "jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * x0", r"noise|x0"),
    ("cosine_betas", "    t = jnp.arange(T + 1, dtype=jnp.float32)\n    f = jnp.cos((t / T + s) / (1 + s) * jnp.pi / 2) ** 2\n    alpha_bar = f / f[0]\n    return jnp.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], max_beta)",
     "    def alpha_bar(u):\n        return jnp.cos((u + s) / (1 + s) * jnp.pi / 2) ** 2\n    betas = []\n    for i in range(T):\n        betas.append(jnp.minimum(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta))\n    return jnp.array(betas)", OK),
]
