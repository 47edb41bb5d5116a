"""configs/sweep.py: every entry validates, has the paper's run shape, and its model (built
abstractly, no FLOPs) has the preset formula's parameter count and shards on a v5e-256 mesh; the
arms of experiments/configs/paper.py validate."""
import jax
import pytest
from jax.sharding import AbstractMesh, AxisType

from birdie_jax.aot import planned_vocab_size
from birdie_jax.config import CURRICULA, FAMILIES, validate_config
from birdie_jax.models import param_count
from birdie_jax.models.layer_stack import layer_ndim
from birdie_jax.models.presets import PRESET_NAMES
from birdie_jax.parallel.mesh import MESH_AXES, resolve_mesh_shape
from birdie_jax.train.state import make_train_setup
from configs import sweep
from experiments.configs import paper

PAPER_TOKENS = 520 * 2048 * 32_000  # paper §4.1: batch 520 x 2048 tokens x 32k steps


def abstract_mesh(config, devices: int) -> AbstractMesh:
  """The config's mesh over `devices` devices, without devices."""
  sizes = resolve_mesh_shape(config.mesh.shape, devices)
  return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(MESH_AXES))


def test_names_cover_families_sizes_and_curricula():
  assert tuple(sweep.RUNS) == PRESET_NAMES
  names = sweep.sweep_names()
  assert len(names) == len(set(names)) == len(FAMILIES) * len(PRESET_NAMES) * len(CURRICULA)
  assert "hawk-1.4b-birdie" in names and "gated_ssm-7b-birdie_causal" in names
  assert {sweep.parse_name(n) for n in names} == {
      (f, s, c) for f in FAMILIES for s in PRESET_NAMES for c in CURRICULA}


@pytest.mark.parametrize("bad", ["hawk-1.4b", "mamba-1.4b-birdie", "hawk-3b-ntp", "hawk-tiny-t5"])
def test_bad_names_are_rejected_with_the_choices(bad):
  with pytest.raises(ValueError, match="families .* sizes .* curricula"):
    sweep.get_config(bad)


def test_paper_arms_validate_and_are_what_their_names_say():
  """experiments/configs/paper.py: `<family>_<curriculum>`, bidirectional exactly for birdie, at
  the GPU scale and as `<arm>,tiny`; unknown arms and variants are refused."""
  assert len(paper.ARMS) == 7
  for arm in paper.ARMS:
    family, curriculum = arm.split("_", 1)
    for arg in (arm, f"{arm},tiny"):
      config = paper.get_config(arg)
      validate_config(config)
      assert (config.model.family, config.curriculum) == (family, curriculum)
      assert config.model.bidirectional == (curriculum == "birdie")
      assert (config.model.preset == "tiny") == arg.endswith(",tiny")
  with pytest.raises(ValueError, match="unknown arm"):
    paper.get_config("hawk_t5")
  with pytest.raises(ValueError, match="unknown variant"):
    paper.get_config("hawk_ntp,huge")


def test_every_config_validates_with_its_name():
  for name in sweep.sweep_names():
    family, size, curriculum = sweep.parse_name(name)
    config = sweep.get_config(name)
    validate_config(config)
    assert (config.model.family, config.model.preset, config.curriculum) == (
        family, size, curriculum)
    assert config.model.bidirectional == (curriculum == "birdie"), name
    if size != "tiny":
      assert config.train.seq_len == 2048 and config.model.dtype == "bfloat16"
      assert config.train.batch_size % 256 == 0  # divides every power-of-two slice up to 256
      assert planned_vocab_size(config.data) == sweep.VOCAB_SIZE


def test_paper_run_keeps_its_token_budget():
  config = sweep.get_config("hawk-1.4b-birdie")
  tokens = config.train.steps * config.train.batch_size * config.train.seq_len
  assert tokens == PAPER_TOKENS == sweep.RUNS["1.4b"].tokens
  for size in PRESET_NAMES[1:]:  # ~20-25 tokens per parameter, as the paper's 1.4B runs
    for family in FAMILIES:
      assert 19 <= sweep.RUNS[size].tokens / sweep.num_params(family, size) <= 32, (family, size)


def test_docstring_time_table_is_current():
  for row in sweep.time_table():
    assert row in sweep.__doc__, f"regenerate the docstring table: {row}"
  hours = sweep.expected_hours("hawk", "1.4b")  # 6·N·D / (256 x 197 TFLOP/s x 40%)
  expected = 6 * sweep.num_params("hawk", "1.4b") * PAPER_TOKENS / (256 * 197e12 * 0.4) / 3600
  assert hours == pytest.approx(expected)


def _mesh_axes(spec) -> set[str]:
  return {axis for entry in spec if entry
          for axis in (entry if isinstance(entry, tuple) else (entry,))}


# Every family at the paper's size, every size for Hawk (the rest share these code paths; the
# formula is checked against the built model for every family x preset in test_models_presets).
_BUILT = sorted({f"{f}-1.4b-birdie" for f in FAMILIES}
                | {f"hawk-{s}-ntp" for s in PRESET_NAMES if s != "1.4b"})


def _layer_size(path, value) -> int:
  """Elements of one layer's copy of a parameter (stacked ones hold every layer's)."""
  stacked = layer_ndim(path, value) < value.ndim
  return value.size // value.shape[0] if stacked else value.size


@pytest.mark.parametrize("name", _BUILT)
def test_abstract_model_matches_formula_and_shards(name):
  config = sweep.get_config(name)
  vocab = planned_vocab_size(config.data)
  setup = make_train_setup(config, vocab, abstract_mesh(config, 256))  # a v5e-256 slice
  assert setup.num_params == param_count(config.model, vocab)
  if config.model.preset == "tiny":
    return
  # ZeRO-3 style: every large parameter (per layer, for stacked blocks) is split over the fsdp
  # shards.
  params = jax.tree_util.tree_flatten_with_path(setup.abstract_state.params)[0]
  shardings = jax.tree.leaves(setup.state_shardings.params)
  replicated = [jax.tree_util.keystr(path) for (path, value), sharding in zip(params, shardings)
                if _layer_size(path, value) >= 2**20 and "fsdp" not in _mesh_axes(sharding.spec)]
  assert not replicated, replicated
