"""Research II, the objectives study: Hawk at ~50M and ~130M parameters on Project Gutenberg.

One config per arm, `<family>-<size>-<curriculum>[-lr<peak>]-s<seed>` (ARMS lists the planned
ones; `experiments/study/STATUS.md` says in which order they run and how they are evaluated):
    python -m birdie_jax.main --config=experiments/study/config.py:hawk-50m-birdie-s0 \\
        --workdir=workdirs/study/hawk-50m-birdie-s0
Running it again resumes from the workdir's latest checkpoint. `<arm>,tiny` is the arm's CPU
smoke variant (bytes, a 2-layer width-32 model, a few steps on WikiText-2's test articles).

Arms. Hawk: ntp at three peak LRs (the best of the three is NTP's number), ul2, uniform (Birdie's
configurations at fixed uniform class weights, no controller: the controller's baseline, on the
bidirectional model like birdie), birdie_causal, birdie (bidirectional prefix). Transformer ntp
and birdie at 50m are the reference (the sanity gate reads transformer-50m-ntp). Two seeds for
ntp and birdie at 50m; every other arm and any LR or seed can be asked for by name.

Sizes (parameter counts by `birdie_jax.models.param_count`, embeddings included, at the study's
16,384-piece vocabulary):
  50m   Hawk width 512, 12 blocks, RG-LRU width 768, MLP 3x: 52,779,520 parameters; Transformer
        width 512, 12 blocks, 8 heads of 64, MLP 3x: 49,345,024. Shard 0, 1,600 steps x 32 rows x
        2048 tokens = 104,857,600 tokens: 3.85 epochs of the shard's 27,258,067 training tokens
        (256 books; 27,692,924 in all 263, counted with the study tokenizer; 2% of books held
        out).
  150m  Hawk preset `150m` (width 768, 16 blocks, RG-LRU 1024, MLP 8/3): 130,302,720 parameters.
        Shards 0 and 1, 3,200 steps x 32 x 2048 = 209,715,200 tokens: 3.83 epochs of their
        54,769,798 training tokens (523 books; 55,685,723 in all 536; shard 1: 273 books,
        27,992,799 tokens).
Held out: gutenberg_val 4,324,131 tokens (25 books), wikitext2_test 385,192 (62 articles).
Every arm of a size has the same tokens, steps and schedule (linear warm-up over 2% of the steps,
cosine to 10% of the peak), sequence length 2048, bfloat16 compute. Peak LR 1e-3 (50m) and 6e-4
(150m, GPT-3's for its size); ntp also runs at half and twice the peak.

Tokenizer: every arm reads the one committed BPE `experiments/study/tokenizer/gutenberg-16k.model`
(`experiments/study/tokenizer.py` built it from shard 0's training split), so vocabularies and
perplexities compare across arms.

Data: the corpus folder is `$BIRDIE_STUDY_CORPUS`, default `../shared/corpus` (this checkout's
neighbour). A GPU call does not receive `../shared`: copy the shards into an ignored folder of the
repo (`mkdir -p data/study && cp ../shared/corpus/gutenberg_train_0.jsonl.zst data/study/`, with
`/data/study/` in `.git/info/exclude`), name it in `carry`, and run with
`BIRDIE_STUDY_CORPUS=data/study`. Paths are resolved when the config loads, so the workdir's
config.json records the path the run used.
"""
from __future__ import annotations

import dataclasses
import os
import re

import ml_collections

from birdie_jax.config import default_config
from birdie_jax.objectives.grid import CURRICULA

CORPUS_ENV = "BIRDIE_STUDY_CORPUS"
DEFAULT_CORPUS = os.path.join("..", "shared", "corpus")
TOKENIZER = os.path.join("experiments", "study", "tokenizer", "gutenberg-16k.model")
VOCAB_SIZE = 16_384
TINY = "tiny"
TINY_SOURCE = "wikitext2_test.jsonl.zst"  # 62 articles: the CPU variant's corpus


@dataclasses.dataclass(frozen=True)
class Size:
  """One model size's shapes per family, data shards and token budget."""
  shapes: dict[str, dict]  # family -> model keys
  shards: tuple[str, ...]  # train files of the corpus folder
  steps: int
  learning_rate: float  # the peak every arm but the ntp LR sweep uses
  train_tokens: int  # unique tokens of the training split (study tokenizer, 2% of books held out)
  batch_size: int = 32
  seq_len: int = 2048

  @property
  def tokens(self) -> int:
    """Training tokens of every arm of this size."""
    return self.steps * self.batch_size * self.seq_len

  @property
  def ntp_learning_rates(self) -> tuple[float, ...]:
    """ntp's sweep: half, one and two times the peak."""
    return (self.learning_rate / 2, self.learning_rate, self.learning_rate * 2)


_HAWK_50M = dict(width=512, depth=12, lru_width=768, num_heads=8, mlp_expansion=3.0)
_TRANSFORMER_50M = dict(width=512, depth=12, num_heads=8, num_kv_heads=8, head_dim=64,
                        mlp_expansion=3.0)
SIZES = {
    "50m": Size(shapes={"hawk": _HAWK_50M, "transformer": _TRANSFORMER_50M},
                shards=("gutenberg_train_0.jsonl.zst",), steps=1_600, learning_rate=1e-3,
                train_tokens=27_258_067),
    "150m": Size(shapes={"hawk": dict(preset="150m")},
                 shards=("gutenberg_train_0.jsonl.zst", "gutenberg_train_1.jsonl.zst"),
                 steps=3_200, learning_rate=6e-4, train_tokens=54_769_798),
}
_NAME = re.compile(r"(?P<family>[a-z_]+)-(?P<size>\d+m)-(?P<curriculum>[a-z0-9_]+)"
                   r"(?:-lr(?P<lr>[0-9.e+-]+))?-s(?P<seed>\d+)")


def lr_text(learning_rate: float) -> str:
  """The LR as arm names write it: 1e-3, 5e-4, 2e-3, 6e-4, 1.2e-3."""
  mantissa, exponent = f"{learning_rate:.6e}".split("e")
  return f"{float(mantissa):g}e{int(exponent)}"


def arm_name(family: str, size: str, curriculum: str, seed: int,
             learning_rate: float | None = None) -> str:
  """'hawk-50m-birdie-s0'; ntp arms carry their LR: 'hawk-50m-ntp-lr1e-3-s0'."""
  lr = "" if learning_rate is None else f"-lr{lr_text(learning_rate)}"
  return f"{family}-{size}-{curriculum}{lr}-s{seed}"


def _arms() -> tuple[str, ...]:
  """The planned arms, in the order STATUS.md runs them."""
  s50, s150 = SIZES["50m"], SIZES["150m"]
  arms = [arm_name("transformer", "50m", "ntp", 0, s50.learning_rate)]
  arms += [arm_name("hawk", "50m", "ntp", 0, lr) for lr in s50.ntp_learning_rates]
  arms += [arm_name("hawk", "50m", c, 0) for c in ("birdie", "uniform", "birdie_causal", "ul2")]
  arms += [arm_name("transformer", "50m", "birdie", 0), arm_name("hawk", "50m", "birdie", 1),
           arm_name("hawk", "50m", "ntp", 1, s50.learning_rate)]
  arms += [arm_name("hawk", "150m", "ntp", 0, lr) for lr in s150.ntp_learning_rates]
  arms += [arm_name("hawk", "150m", c, 0) for c in ("birdie", "uniform", "birdie_causal", "ul2")]
  return tuple(arms)


ARMS = _arms()


def parse_arm(name: str) -> dict:
  """{family, size, curriculum, learning_rate, seed} of an arm name; ValueError otherwise."""
  match = _NAME.fullmatch(name)
  parts = match.groupdict() if match else {}
  size = SIZES.get(parts.get("size", ""))
  if (size is None or parts["family"] not in size.shapes or parts["curriculum"] not in CURRICULA
      or (parts["lr"] is None) != (parts["curriculum"] != "ntp")):
    raise ValueError(f"unknown study arm {name!r}: <family>-<size>-<curriculum>[-lr<lr>]-s<seed>"
                     f" with sizes {tuple(SIZES)}, curricula {CURRICULA}, an LR for ntp only "
                     f"(planned: {', '.join(ARMS[:3])}, ...)")
  lr = float(parts["lr"]) if parts["lr"] else size.learning_rate
  return dict(family=parts["family"], size=parts["size"], curriculum=parts["curriculum"],
              learning_rate=lr, seed=int(parts["seed"]))


def corpus_dir() -> str:
  """The corpus folder: `$BIRDIE_STUDY_CORPUS`, else `../shared/corpus`."""
  return os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS


def _source(shards: tuple[str, ...]) -> str:
  """One file, or a glob of the shards (`gutenberg_train_[01].jsonl.zst`)."""
  if len(shards) == 1:
    return os.path.join(corpus_dir(), shards[0])
  digits = "".join(s.split("_")[-1].split(".")[0] for s in shards)
  return os.path.join(corpus_dir(), f"gutenberg_train_[{digits}].jsonl.zst")


def _tiny(config: ml_collections.ConfigDict) -> None:
  """The CPU smoke variant: bytes, a 2-layer width-32 model, a few steps of WikiText-2 test."""
  config.model.update(preset="", width=32, depth=2, lru_width=32, num_heads=2, num_kv_heads=2,
                      head_dim=16, mlp_expansion=3.0, dtype="float32")
  config.data.source = os.path.join(corpus_dir(), TINY_SOURCE)
  config.data.val_fraction = 0.1
  config.data.tokenizer.kind = "bytes"
  config.data.tokenizer.model_path = None
  config.train.update(steps=8, batch_size=8, seq_len=128, warmup_steps=1, log_every=2,
                      eval_every=4, eval_batches=1)
  config.checkpoint.update(every_steps=4, async_save=False)
  config.controller.update(num_candidates=16, train_steps=2, hidden=16, layers=1)
  config.eval.update(examples=2, batch_size=8, seq_len=512)  # phonebook fits 512


def get_config(arg: str) -> ml_collections.ConfigDict:
  """The config of study arm `arg` (see ARMS), or its CPU variant `'<arm>,tiny'`."""
  name, _, variant = arg.partition(",")
  if variant not in ("", TINY):
    raise ValueError(f"unknown variant {variant!r} of study arm {name} (known: {TINY})")
  arm = parse_arm(name)
  size = SIZES[arm["size"]]
  config = default_config()
  config.seed = arm["seed"]
  config.curriculum = arm["curriculum"]
  config.model.family = arm["family"]
  config.model.update(size.shapes[arm["family"]])
  config.model.bidirectional = arm["curriculum"] in ("birdie", "uniform")
  config.model.dtype = "bfloat16"
  config.data.source = _source(size.shards)
  config.data.val_fraction = 0.02
  config.data.tokenizer.vocab_size = VOCAB_SIZE
  config.data.tokenizer.model_path = TOKENIZER
  config.train.update(steps=size.steps, batch_size=size.batch_size, seq_len=size.seq_len,
                      learning_rate=arm["learning_rate"], warmup_steps=size.steps // 50,
                      log_every=25, eval_every=200, eval_batches=8)
  config.checkpoint.update(every_steps=200, max_to_keep=2)
  config.eval.update(tasks="copying_text,copying,copying_frequent,phonebook,mqar,perplexity",
                     examples=32, batch_size=16, seq_len=size.seq_len)
  if variant == TINY:
    _tiny(config)
  return config
