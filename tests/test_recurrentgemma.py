"""RecurrentGemma interop (models/recurrentgemma.py, train/init_from.py) against the
`recurrentgemma` package itself: random params of their Griffin and Hawk, converted, give their
logits (float32, 1e-5 of the largest) and their sampler's greedy tokens; conversions round-trip
bitwise; their releases' shapes map to our configs (and our parameter count); a checkpoint
directory starts a run, with one line naming a mismatched config; their tokenizer extended with
our reserved tokens keeps every id."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import sentencepiece as spm
from flax import nnx

from birdie_jax.config import default_config, validate_config
from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import SentencePieceTokenizer
from birdie_jax.errors import ConfigError
from birdie_jax.models import build_model, param_count, presets
from birdie_jax.models import recurrentgemma as rgemma
from birdie_jax.models.decoding import generate
from birdie_jax.models.layer_stack import unstack_layers
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train import init_from, loop
from birdie_jax.train.state import make_train_setup
from models_helpers import fast_compile  # noqa: F401  (fixture)

rg = pytest.importorskip("recurrentgemma.jax")
pytestmark = pytest.mark.usefixtures("fast_compile")

VOCAB, BOS = 97, 2
R, A = rg.TemporalBlockType.RECURRENT, rg.TemporalBlockType.ATTENTION
# width 48: sqrt(48) = 6.928 but their bfloat16 rounding multiplies by 6.9375, so the parity needs
# model.embed_scale sqrt_width_bf16; soft cap 3 bends most logits; window 4 < the decoded length.
GRIFFIN = rg.GriffinConfig(vocab_size=VOCAB, width=48, mlp_expanded_width=96, num_heads=4,
                           block_types=(R, R, A), embeddings_scale_by_sqrt_dim=True,
                           attention_window_size=4, logits_soft_cap=3.0, lru_width=64)
HAWK = rg.GriffinConfig(vocab_size=VOCAB, width=32, mlp_expanded_width=96, num_heads=2,
                        block_types=(R, R), embeddings_scale_by_sqrt_dim=False,
                        attention_window_size=8, logits_soft_cap=0.0, lru_width=48)


def _random_params(config, seed: int):
  """Their params tree (from `init`'s shapes), every leaf random: their init zeroes biases and norm
  scales, which would hide a mapping that mixes them up."""
  model = rg.Griffin(config, gradient_checkpointing=False)
  tokens = jnp.zeros((1, 4), jnp.int32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), tokens, tokens)["params"]
  rng = np.random.default_rng(seed)

  def fill(leaf):
    scale = leaf.shape[-2] ** -0.5 if len(leaf.shape) >= 2 else 0.3
    return (rng.standard_normal(leaf.shape) * scale).astype(np.float32)

  return model, shapes, jax.tree.map(fill, shapes)


def _ours(rg_config, **base):
  """Our ModelConfig for their config (the rest from the defaults, changed by `base`)."""
  default = dataclasses.replace(presets.resolve(default_config().model), **base)
  return rgemma.model_config(rgemma.griffin_architecture(rg_config), default)


def _abstract(config):
  """Our model's params, as shapes."""
  return nnx.to_pure_dict(nnx.state(nnx.eval_shape(
      lambda: build_model(config, VOCAB, rngs=nnx.Rngs(0)))))


def _bound(config, params):
  """Our model holding `params` (no init)."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: build_model(config, VOCAB,
                                                                 rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, params)
  return graphdef, state


@jax.jit
def _theirs_forward(params, tokens, positions):
  return rg.Griffin(HAWK, gradient_checkpointing=False).apply(
      {"params": params}, tokens, positions, return_cache=False)[0]


def _assert_close(ours, theirs):
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


@pytest.fixture(scope="module")
def griffin():
  model, shapes, params = _random_params(GRIFFIN, seed=1)
  return model, shapes, params, _ours(GRIFFIN)


@pytest.fixture(scope="module")
def hawk():
  _, shapes, params = _random_params(HAWK, seed=2)
  return shapes, params, _ours(HAWK)


class _IdVocab:
  """Their sampler's vocabulary for prompts written as space-separated ids (no tokenizer)."""

  def EncodeAsIds(self, text):  # noqa: N802 (their API)
    return [int(t) for t in text.split()]

  def DecodeIds(self, ids):  # noqa: N802
    return " ".join(map(str, ids))

  def bos_id(self):
    return BOS

  def eos_id(self):
    return -1

  def pad_id(self):
    return 0


def test_griffin_logits_and_greedy_tokens_match_their_sampler(griffin):
  """Two prompts of different lengths (left-padded by both samplers): 10 greedy tokens each, past
  the window of 4, equal; the logits of every prompt and generated position within 1e-5."""
  model, _, theirs, config = griffin
  assert (config.family, config.attention_window, config.embed_scale) == (
      "griffin", 5, "sqrt_width_bf16")
  prompts, steps = [[5, 9, 11, 3, 7, 8], [13, 14, 40, 41]], 10
  sampler = rg.Sampler(model=model, vocab=_IdVocab(), params=theirs)
  out = sampler([" ".join(map(str, p)) for p in prompts], total_generation_steps=steps,
                echo=True, return_logits=True, end_sampling_at_eos_token=False)

  length = 1 + max(map(len, prompts))
  batch = {k: np.zeros((2, length), dtype) for k, dtype in (
      ("inputs", np.int32), ("segment_ids", np.int32), ("positions", np.int32),
      ("prefix_mask", bool))}
  for i, prompt in enumerate(prompts):
    row = [BOS, *prompt]
    batch["inputs"][i, length - len(row):] = row
    batch["segment_ids"][i, length - len(row):] = 1
    batch["positions"][i, length - len(row):] = np.arange(len(row))
  graphdef, state = _bound(config, rgemma.from_recurrentgemma(theirs, config))
  ours = np.asarray(generate(nnx.merge(graphdef, state), batch, max_new_tokens=steps,
                             rng=jax.random.key(0)))
  for i, prompt in enumerate(prompts):
    np.testing.assert_array_equal(ours[i], np.asarray(out.tokens[i])[len(prompt) + 1:])

  # Their echoed logits: the prompt's, then at P the last prompt token's again, then each
  # generated token's (the last generated token is never run): outputs at positions 0..P+T-2.
  full = np.zeros((2, length + steps - 1), np.int32)
  seg = np.zeros_like(full)
  pos = np.zeros_like(full)
  for i in range(2):
    n = len(out.tokens[i]) - 1
    full[i, -n:] = np.asarray(out.tokens[i])[:-1]
    seg[i, -n:] = 1
    pos[i, -n:] = np.arange(n)
  logits = jax.jit(lambda s, x, g, p: nnx.merge(graphdef, s)(
      x, segment_ids=g, positions=p, prefix_mask=jnp.zeros_like(x, bool)))(state, full, seg, pos)
  for i, prompt in enumerate(prompts):
    theirs_logits = np.asarray(out.logits[i])
    p = len(prompt) + 1
    theirs_logits = np.concatenate([theirs_logits[:p], theirs_logits[p + 1:]])
    _assert_close(np.asarray(logits)[i, -len(theirs_logits):], theirs_logits)


def test_hawk_logits_match_theirs_across_packed_documents(hawk):
  """A row of two documents (their positions restart at 0; our segment ids change): the recurrence
  and the conv reset at the second document in both models alike."""
  _, theirs, config = hawk
  assert (config.family, config.embed_scale, config.logits_soft_cap) == ("hawk", "none", 0.0)
  tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 12)).astype(np.int32)
  positions = np.array([list(range(12)), list(range(7)) + list(range(5))], np.int32)
  segments = np.array([[1] * 12, [1] * 7 + [2] * 5], np.int32)
  graphdef, state = _bound(config, rgemma.from_recurrentgemma(theirs, config))
  ours = jax.jit(lambda s: nnx.merge(graphdef, s)(
      tokens, segment_ids=segments, positions=positions,
      prefix_mask=np.zeros_like(tokens, bool)))(state)
  _assert_close(ours, _theirs_forward(theirs, tokens, positions))


@pytest.mark.parametrize("family", ["griffin", "hawk"])
def test_round_trips_are_bitwise_and_export_has_their_init_layout(family, griffin, hawk):
  shapes, theirs, config = (griffin[1:]) if family == "griffin" else hawk
  back = rgemma.to_recurrentgemma(rgemma.from_recurrentgemma(theirs, config), config)
  assert jax.tree.structure(back) == jax.tree.structure(theirs)
  assert all(a.dtype == b.dtype and np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(theirs)))

  rng = np.random.default_rng(3)
  for scan in (False, True):  # ours -> theirs -> ours, from random params of ours, stacked or not
    ours_config = dataclasses.replace(config, scan_layers=scan)
    ours = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), _abstract(
        ours_config))
    exported = rgemma.to_recurrentgemma(ours, ours_config)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), exported) == jax.tree.map(
        lambda s: (s.shape, s.dtype), dict(shapes))
    again = rgemma.from_recurrentgemma(exported, ours_config)
    assert jax.tree.structure(again) == jax.tree.structure(ours)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again),
                                                    jax.tree.leaves(ours)))
    if scan and family == "hawk":  # 2 blocks: both stacked (griffin's 3 are one pattern)
      assert "stacked" in ours["blocks"]
      assert jax.tree.structure(unstack_layers(again)) == jax.tree.structure(
          rgemma.from_recurrentgemma(exported, config))


def test_config_mapping_both_ways_and_their_releases():
  for rg_config in (GRIFFIN, HAWK):
    ours = _ours(rg_config)
    fields = rgemma.griffin_fields(ours, VOCAB)
    fields["block_types"] = tuple(rg.TemporalBlockType[t] for t in fields["block_types"])
    assert rg.GriffinConfig(**fields) == rg_config
  for name, release in rgemma.RELEASES.items():
    theirs = rg.Preset[name].config_dict
    assert {k: theirs[k] for k in ("width", "mlp_expanded_width", "num_heads", "lru_width",
                                   *rgemma.HYPER_KEYS)} == {
        k: release[k] for k in ("width", "mlp_expanded_width", "num_heads", "lru_width",
                                *rgemma.HYPER_KEYS)}
    assert (len(theirs["block_types"]), A in theirs["block_types"]) == (
        release["depth"], release["griffin"])

  two_b = rg.GriffinConfig.from_preset(rg.Preset.RECURRENT_GEMMA_2B_V1)
  ours = _ours(two_b)
  presets.validate_model_config(ours)
  assert (ours.family, ours.depth, ours.attention_every, ours.head_dim, ours.attention_window,
          ours.logits_soft_cap) == ("griffin", 26, 3, 256, 2049, 30.0)
  # Their 2B's first 3 blocks (tracing all 26 takes seconds), counted by us and by their init;
  # blocks 3..25 repeat them: the whole 2B's shapes are recognised as the release.
  short = two_b._replace(block_types=two_b.block_types[:3])
  shapes = jax.eval_shape(rg.Griffin(short, gradient_checkpointing=False).init,
                          jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                          jnp.zeros((1, 2), jnp.int32))["params"]
  assert param_count(_ours(short), 256_000) == sum(x.size for x in jax.tree.leaves(shapes))
  whole = {**shapes, **{f"blocks.{i}": shapes[f"blocks.{i % 3}"] for i in range(26)}}
  assert rgemma.architecture(whole).release == "RECURRENT_GEMMA_2B_V1"
  assert rgemma.architecture(shapes).release is None

  with pytest.raises(ConfigError, match="bidirectional"):
    rgemma.griffin_fields(dataclasses.replace(ours, bidirectional=True), VOCAB)
  with pytest.raises(ConfigError, match="num_kv_heads"):
    rgemma.griffin_fields(dataclasses.replace(ours, num_kv_heads=2), VOCAB)


def _save(path, tree):
  ocp.PyTreeCheckpointer().save(path, tree)
  return str(path)


def test_init_from_loads_a_checkpoint_dir_and_names_a_mismatch_in_one_line(griffin, tmp_path):
  _, _, theirs, config = griffin
  wrapped = _save(tmp_path / "wrapped", {"params": theirs})  # their save_parameters' layout
  bare = _save(tmp_path / "bare", theirs)  # the released checkpoints' layout
  other = _save(tmp_path / "other", {"w": np.zeros(3, np.float32)})
  assert init_from.is_recurrentgemma_checkpoint(wrapped)
  assert init_from.is_recurrentgemma_checkpoint(bare)
  assert not init_from.is_recurrentgemma_checkpoint(other)
  assert not init_from.is_recurrentgemma_checkpoint(str(tmp_path / "missing"))

  expected = rgemma.from_recurrentgemma(theirs, config)
  for path in (wrapped, bare):
    loaded = init_from.load_init_params(path, config)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded),
                                                    jax.tree.leaves(expected)))

  # Bidirectional: the same params (the reverse halves start from the causal channels).
  bidir = init_from.load_init_params(bare, dataclasses.replace(config, bidirectional=True))
  assert jax.tree.structure(bidir) == jax.tree.structure(expected)

  # A larger tokenizer: the old rows as they were, new rows about the mean and all distinct.
  grown = init_from.load_init_params(bare, config, VOCAB + 5, seed=0)["embed"]["table"]
  old = np.asarray(theirs["embedder"]["input_embedding"])
  np.testing.assert_array_equal(grown[:VOCAB], old)
  spread = old.std(axis=0)
  assert np.all(np.abs(grown[VOCAB:] - old.mean(axis=0)) < 0.05 * spread)
  assert len({row.tobytes() for row in grown[VOCAB:]}) == 5

  wrong = dataclasses.replace(config, width=64, embed_scale="sqrt_width")
  with pytest.raises(ConfigError) as error:
    init_from.load_init_params(bare, wrong)
  message = str(error.value)
  assert "\n" not in message and "model.width 64 (run) != 48 (checkpoint)" in message
  assert "mlp_expansion" not in message  # 2.0 at width 64 is still theirs at width 48
  with pytest.raises(ConfigError, match=r"model.mlp_expansion 3.0 \(run\) != 2.0"):
    init_from.load_init_params(bare, dataclasses.replace(config, mlp_expansion=3.0))
  assert "model.embed_scale 'sqrt_width' (run) != 'sqrt_width_bf16'" in message
  assert "--config.model.width=48" in message
  with pytest.raises(ConfigError, match="not a RecurrentGemma checkpoint"):
    init_from.load_init_params(other, config)
  with pytest.raises(ConfigError, match="97-token vocabulary"):
    init_from.load_init_params(bare, config, VOCAB - 1)


def test_a_first_start_takes_init_from_and_a_fresh_optimizer(griffin, tmp_path):
  """The loop's first-start path (no checkpoint in the workdir) with `train.init_from`."""
  _, _, theirs, config = griffin
  run = default_config()
  run.model.update({k: getattr(config, k) for k in run.model.keys()})
  run.train.init_from = _save(tmp_path / "ckpt", theirs)
  setup = make_train_setup(run, VOCAB + 3, make_mesh(run.mesh.shape))

  class NoCheckpoint:
    def restore_latest(self, *args):
      return None

  state = loop._restore_or_init(run, str(tmp_path), NoCheckpoint(), setup, None, None, VOCAB + 3)
  expected = init_from.load_init_params(run.train.init_from, config, VOCAB + 3, seed=run.seed)
  assert int(state.step) == 0
  assert all(np.array_equal(np.asarray(a), b) for a, b in zip(jax.tree.leaves(state.params),
                                                              jax.tree.leaves(expected)))
  assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(state.opt_state)
             if np.asarray(x).dtype == np.float32)


def test_extended_tokenizer_keeps_every_id_and_reserves_ours(tmp_path):
  """A Gemma-like SentencePiece model (pad 0, eos 1, bos 2, unk 3, none of our tokens)."""
  text = tmp_path / "text.txt"
  text.write_text("\n".join(f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)))
  spm.SentencePieceTrainer.train(
      input=str(text), model_prefix=str(tmp_path / "gemma"), vocab_size=60, model_type="bpe",
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
      bos_piece="<bos>", unk_piece="<unk>", minloglevel=2)
  theirs = spm.SentencePieceProcessor(model_file=str(tmp_path / "gemma.model"))
  with pytest.raises(ConfigError, match="lacks the reserved"):
    SentencePieceTokenizer.load(tmp_path / "gemma.model")

  init_from.main([f"--tokenizer={tmp_path / 'gemma.model'}", f"--out={tmp_path / 'ours.model'}"])
  ours = SentencePieceTokenizer.load(tmp_path / "ours.model")
  assert ours.vocab_size == theirs.get_piece_size() + len(special_tokens.CONTROL)
  sample = "the lazy fox 7 jumps"
  np.testing.assert_array_equal(ours.encode(sample), theirs.encode(sample))
  assert [ours.special_id(n) for n in special_tokens.META] == [0, 3, 2, 1]
  assert ours.special_id(special_tokens.BEGIN) == theirs.get_piece_size()


@pytest.mark.parametrize("variant", ["2b", "9b,causal", "griffin_7b", "hawk_7b"])
def test_the_release_configs_match_their_releases(variant):
  """configs/recurrentgemma.py:<release> is a valid config whose model `train.init_from` accepts
  for that release's checkpoint (shapes as their preset builds them)."""
  from configs import recurrentgemma as release_configs  # pylint: disable=import-outside-toplevel

  config = release_configs.get_config(variant)
  name = release_configs.RELEASES[variant.split(",")[0]]
  theirs = rg.GriffinConfig.from_preset(rg.Preset[name])
  run = presets.resolve(config.model)
  presets.validate_model_config(run)
  assert run.bidirectional == ("causal" not in variant)
  arch = dataclasses.replace(rgemma.griffin_architecture(theirs), release=name)
  assert rgemma.mismatches(run, init_from.expected_config(arch, run)) == []
  assert param_count(run, 256_000) == param_count(_ours(theirs), 256_000)
  if variant == "2b":
    validate_config(config)


def test_stacked_layout_with_leftover_blocks_round_trips():
  """A bidirectional Griffin of 8 blocks under scan_layers: its pattern (bidirectional recurrent,
  recurrent, attention) stacked twice, and 2 blocks left over."""
  config = dataclasses.replace(_ours(GRIFFIN), depth=8, bidirectional=True, scan_layers=True)
  rng = np.random.default_rng(4)
  ours = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), _abstract(config))
  assert len(ours["blocks"]["stacked"]) == 3 and sorted(ours["blocks"]["tail"]) == [0, 1]
  theirs = rgemma.to_recurrentgemma(ours)
  assert [("attention_block" in theirs[f"blocks.{i}"]) for i in range(8)] == [
      i % 3 == 2 for i in range(8)]
  again = rgemma.from_recurrentgemma(theirs, config)
  assert jax.tree.structure(again) == jax.tree.structure(ours)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(ours)))
