"""The Gated SSM reward model (against the original agent's formulas), scoring and fitting."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from birdie_jax.controller import fit
from birdie_jax.controller import reward_model
from birdie_jax.controller import selection

NUM_CONFIGS, HIDDEN, LAYERS, LENGTH = 6, 16, 2, 9
CLASSES = np.array([0, 0, 1, 1, 1, 2])


def _params(seed=0):
  return reward_model.init_params(jax.random.PRNGKey(seed), NUM_CONFIGS, hidden=HIDDEN,
                                  layers=LAYERS)


def _rows(seed=1, length=LENGTH):
  rng = np.random.default_rng(seed)
  losses = rng.uniform(1, 5, (length, NUM_CONFIGS))
  actions = rng.dirichlet(np.ones(NUM_CONFIGS), length)
  return jnp.asarray(np.concatenate([losses, actions], -1), jnp.float32)


def _split_norm_reference(p, x):
  def rms(v, scale):
    return scale * v / (np.sqrt(np.mean(v**2, -1, keepdims=True)) + 1e-8)
  half = x.shape[-1] // 2
  return np.concatenate([rms(x[..., :half], p["left"]), rms(x[..., half:], p["right"])],
                        -1) * p["scale"]


def _reference(params, rows):
  """The original agent's MLPModel forward, written out with numpy and a Python loop."""
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  p = jax.tree.map(np.asarray, params)
  x = _split_norm_reference(p["embed"]["norm"], np.asarray(rows)) @ p["embed"]["kernel"]
  for block in p["blocks"]:
    y = _split_norm_reference(block["norm"], x)
    k, u, g_in, g_out = np.split(y @ block["gates"], 4, -1)
    k = sigmoid(k)
    u = u * sigmoid(g_in) * (1 - k)
    h = [u[0]]
    for t in range(1, len(u)):
      h.append(k[t - 1] * h[-1] + u[t])  # the forget gate of the previous position
    x = x + (np.stack(h) * sigmoid(g_out)) @ block["out"]
  return _split_norm_reference(p["head"]["norm"], x) @ p["head"]["kernel"]


def test_forward_matches_the_original_agent():
  params, rows = _params(), _rows()
  out = reward_model.apply(params, rows[None])[0]
  assert out.shape == (LENGTH, NUM_CONFIGS)
  np.testing.assert_allclose(out, _reference(params, rows), rtol=2e-4, atol=2e-5)


def test_model_is_causal():
  params, rows = _params(), _rows()
  changed = rows.at[5:].set(0.0)
  a = reward_model.apply(params, rows[None])[0]
  b = reward_model.apply(params, changed[None])[0]
  np.testing.assert_allclose(a[:5], b[:5], rtol=1e-6)
  assert not np.allclose(a[5:], b[5:])


def test_candidates_are_scored_at_the_row_after_the_history():
  """Regression for the public v2 code, which read the padding row after the candidate."""
  params, rows = _params(), _rows()
  count = 6
  history = rows.at[count:].set(0.0)  # capacity 9, 6 rows filled, zero padding
  candidates = _rows(seed=2, length=5)
  carry = reward_model.history_carry(params, history, jnp.int32(count))
  predicted = reward_model.predict_next(params, carry, candidates)
  for i, candidate in enumerate(candidates):
    sequence = history.at[count].set(candidate)
    full = reward_model.apply(params, sequence[None])[0]
    np.testing.assert_allclose(predicted[i], full[count], rtol=2e-5, atol=2e-6)
  assert np.ptp(np.asarray(predicted), axis=0).min() > 1e-4  # candidates differ


def test_empty_history_scores_candidates_alone():
  params, candidates = _params(), _rows(seed=3, length=4)
  carry = reward_model.history_carry(params, jnp.zeros((LENGTH, 2 * NUM_CONFIGS)), jnp.int32(0))
  predicted = reward_model.predict_next(params, carry, candidates)
  full = reward_model.apply(params, candidates[:, None])[:, 0]
  np.testing.assert_allclose(predicted, full, rtol=2e-5, atol=2e-6)


def test_candidate_scores_differ_and_top_k_is_averaged():
  params, rows = _params(), _rows()
  carry = reward_model.history_carry(params, rows, jnp.int32(LENGTH))
  mixtures = selection.candidates(jax.random.PRNGKey(4), 64, jnp.bool_(False),
                                  jnp.ones(NUM_CONFIGS) / NUM_CONFIGS)
  assert mixtures.shape == (128, NUM_CONFIGS)
  np.testing.assert_allclose(mixtures.sum(-1), 1, rtol=1e-5)
  assert mixtures[64:].max() > mixtures[:64].max()  # the sharpened copies are peakier
  scores = selection.score(params, carry, rows[-1, :NUM_CONFIGS], mixtures, CLASSES)
  assert np.std(np.asarray(scores)) > 1e-4
  best, predicted = selection.best_mixture(mixtures, scores, 8)
  top = np.argsort(np.asarray(scores))[-8:]
  np.testing.assert_allclose(best, np.asarray(mixtures)[top].mean(0), rtol=1e-5)
  # XLA's and numpy's float32 means may round differently (by the host's vector width).
  np.testing.assert_allclose(predicted, np.sort(np.asarray(scores))[-8:].mean(), rtol=1e-6)


def test_exploring_action_is_sparse():
  classes = np.repeat(np.arange(7), [1, 1, 3, 2, 2, 3, 3])
  losses = jnp.full(classes.size, 2.0)
  chosen_counts = set()
  for seed in range(8):
    action = np.asarray(selection.exploring_action(jax.random.PRNGKey(seed), losses, classes))
    assert np.all(action >= 0) and abs(action.sum() - 1) < 1e-5
    by_class = np.sort(np.bincount(classes, action))
    assert by_class[-2:].sum() > 0.85  # one or two classes hold almost everything
    chosen_counts.add(int(np.sum(by_class > 0.2)))
  assert chosen_counts == {1, 2}


def test_fit_lowers_the_training_loss():
  params, rows = _params(), _rows()
  targets = jnp.tanh(rows[:, :NUM_CONFIGS] - 3.0 + rows[:, NUM_CONFIGS:])
  optimizer = fit.make_optimizer(5e-3, 100, 0.1, 1.0)
  _, _, losses = jax.jit(fit.fit, static_argnames=("optimizer", "steps", "noise"))(
      params, optimizer.init(params), optimizer, rows, targets, jnp.int32(7),
      jax.random.PRNGKey(0), steps=100, noise=0.02)
  assert losses.shape == (100,)
  assert float(losses[-1]) < 0.3 * float(losses[0])


def test_cyclic_learning_rate_is_one_triangle_per_update():
  schedule = fit.cyclic_lr(5e-4, 200)
  lr = np.array([float(schedule(i)) for i in (0, 50, 100, 150, 199, 200, 300)])
  np.testing.assert_allclose(lr, [5e-7, 2.5025e-4, 5e-4, 2.5025e-4, 5e-7 + 4.995e-4 / 100, 5e-7,
                                  5e-4], rtol=1e-5)


def test_fused_optimizer_equals_the_optax_chain():
  """`fit.clipped_adamw` is clip_by_global_norm + adamw, step for step (clipping on and off)."""
  schedule = fit.cyclic_lr(5e-2, 10)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1))
  fused = fit.clipped_adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.1, max_norm=1.0)
  params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
  ours, ref = params, params
  ours_state, ref_state = fused.init(params), reference.init(params)
  for step, scale in enumerate([0.01, 3.0, 0.2, 10.0, 0.05, 1.0]):  # norms below and above 1
    grads = jax.tree.map(lambda p: scale * jnp.cos(p * (step + 1)), params)
    updates, ours_state = fused.update(grads, ours_state, ours)
    ours = optax.apply_updates(ours, updates)
    updates, ref_state = reference.update(grads, ref_state, ref)
    ref = optax.apply_updates(ref, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), ours, ref)
