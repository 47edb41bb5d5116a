"""Continue a released RecurrentGemma / Griffin / Hawk checkpoint with the Birdie curriculum.

Once, extend their tokenizer with Birdie's reserved tokens (every Gemma id keeps its meaning):
    python -m birdie_jax.train.init_from --tokenizer=CKPT/tokenizer.model --out=CKPT/birdie.model
Then (CKPT/2b: the Orbax checkpoint directory `recurrentgemma.jax.load_parameters` reads):
    python -m birdie_jax.main --config=configs/recurrentgemma.py:2b --workdir=workdirs/rg2b \\
        --config.train.init_from=CKPT/2b --config.data.tokenizer.model_path=CKPT/birdie.model \\
        --config.data.source='data/*.jsonl'
Variants (`:<release>[,causal]`): 2b, 9b (RecurrentGemma), griffin_7b, hawk_7b (the Griffin
paper's); `,causal` keeps the model causal and trains on birdie_causal. The model keys are the
release's (`birdie_jax/models/recurrentgemma.py`, RELEASES), so `train.init_from` finds no
mismatch; the training keys are starting points for continued pre-training of a 2-9B model on
accelerators: change them with `--config.train.*`.
"""
from birdie_jax.config import default_config
from birdie_jax.models import presets
from birdie_jax.models import recurrentgemma

RELEASES = {"2b": "RECURRENT_GEMMA_2B_V1", "9b": "RECURRENT_GEMMA_9B_V1",
            "griffin_7b": "GRIFFIN_PAPER_7B", "hawk_7b": "HAWK_PAPER_7B"}


def get_config(arg: str | None = None):
  """`arg`: '<release>' or '<release>,causal' with release one of RELEASES' keys."""
  release, *rest = (arg or "").split(",")
  if release not in RELEASES or rest not in ([], ["causal"]):
    raise ValueError(f"configs/recurrentgemma.py needs :<release>[,causal] with release one of "
                     f"{sorted(RELEASES)}, got {arg!r}")
  config = default_config()
  causal = rest == ["causal"]
  config.curriculum = "birdie_causal" if causal else "birdie"
  config.model.bidirectional = not causal
  base = presets.resolve(config.model)
  model = recurrentgemma.model_config(
      recurrentgemma.release_architecture(RELEASES[release]), base)
  config.model.update({k: getattr(model, k) for k in config.model.keys()})
  config.model.dtype = "bfloat16"
  config.model.scan_layers = True        # one compiled block pattern instead of 26-38 blocks
  config.model.remat = "dots"
  config.data.tokenizer.kind = "sentencepiece"  # theirs, extended: data.tokenizer.model_path
  config.train.seq_len = 2048
  config.train.batch_size = 64
  config.train.learning_rate = 1e-4      # continued training: well below a from-scratch peak
  config.train.warmup_steps = 200
  config.train.steps = 10_000
  config.train.eval_every = 500
  config.checkpoint.every_steps = 1000
  return config
