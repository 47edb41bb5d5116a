"""EleutherAI's lm-evaluation-harness (`lm_eval` 0.4) model interface over a placed model:
`loglikelihood`, `loglikelihood_rolling` and `generate_until` on a run's params, in the run's
layout. `birdie_jax/lm_eval.py` builds one from a workdir and registers it as "birdie_jax".

    model = HarnessModel(tokenizer, placed, params, layout="prefix", seq_len=2048,
                         paradigm_id=tokenizer.special_id("<prefix_lm>"), batch_size=16)
    lm_eval.simple_evaluate(model=model, tasks=["lambada_openai"])

Layouts (`evals.layout`; P is 1 where a paradigm token starts the prefix, else 0):
  prefix        the context is the inputs X = [paradigm] + context, read in the bidirectional
                prefix; BEGIN, then the continuation, scored causally (how Birdie models are
                evaluated); a request takes P + len(context) + len(continuation) positions.
  continuation  plain left-to-right: BEGIN + context + continuation, only the continuation scored
                (BEGIN plays lm-eval's BOS/EOT prefix token, so an empty context needs nothing
                else); len(context) + len(continuation) positions.

Tokens: lm-eval hands over (context, continuation) strings. As its HF model does
(`TemplateLM._encode_pair`), trailing whitespace of the context moves to the front of the
continuation, the context is encoded alone and the continuation is what encoding the whole adds
after the context's tokens. A request longer than `seq_len` loses context tokens from the left;
a continuation that cannot fit with no context at all is an error.

Batching: requests are sorted longest first (lm-eval's HF order) and packed greedily, several to
a row of `seq_len` positions, each in its own segment (segment ids keep them independent, in the
bidirectional prefix as in the causal part); every forward pass takes `batch_size` rows (the last
filled with padding rows), so one compiled program serves every request. Results come back in the
requests' order.

loglikelihood_rolling: the document's tokens in lm-eval's rolling windows
(`lm_eval.utils.get_rolling_token_windows`, context_len 1, made disjoint): every token is scored
exactly once, each window after the first conditioned on the tokens before it that fit. Windows
are `seq_len - 1 - P` tokens (room for BEGIN and the paradigm token); each is scored as a request
(context: the earlier tokens of its window, continuation: its new tokens), packed like the others,
and a document's log-likelihood is the sum over its windows.

generate_until: greedy decoding (`models.decoding.generate`, the model's recurrent state / KV
cache) of up to `max_gen_toks` tokens (the request's own, else the model's), stopped at EOS; the
text is cut at the first occurrence of any `until` string. Prompts lose tokens from the left to
leave `max_gen_toks` of `seq_len`; batches of `batch_size` prompts (sorted longest first, the last
batch filled with copies), left-padded to a power-of-two length: one compiled decoding loop per
length and `max_gen_toks`. Sampling (`do_sample` with a temperature) is
refused: the adapter decodes greedily. Single process: every device of the mesh is this
process's.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
import optax
from tqdm import tqdm

from lm_eval import utils as lm_utils
from lm_eval.api.model import LM
from lm_eval.models.utils import normalize_gen_kwargs

from birdie_jax.console import log_warning
from birdie_jax.data import special_tokens
from birdie_jax.data.tokenizer import Tokenizer
from birdie_jax.evals.layout import Layout
from birdie_jax.models.decoding import generate
from birdie_jax.models.placed import PlacedModel
from birdie_jax.parallel.sharding import axis_rules

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)
_NO_TOKEN = -1  # get_rolling_token_windows' prefix token: dropped, the layout's BEGIN replaces it
_PACK_REQUESTS = 4096  # requests packed at a time (bounds the host memory of their rows)


def split_whitespace(context: str, continuation: str) -> tuple[str, str]:
  """lm-eval's word boundary: the context's trailing whitespace moves to the continuation."""
  stripped = context.rstrip()
  return stripped, context[len(stripped):] + continuation


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> Pair:
  """(context ids, continuation ids) as lm-eval's HF model encodes them: whitespace moved, the
  continuation's ids what encoding context + continuation adds after the context's own ids."""
  context, continuation = split_whitespace(context, continuation)
  if not context:
    return [], tokenizer.encode(continuation).tolist()
  whole = tokenizer.encode(context + continuation).tolist()
  context_ids = tokenizer.encode(context).tolist()
  return context_ids, whole[len(context_ids):]


def _bucket(n: int, cap: int) -> int:
  """`n` rounded up to a power of two, at most `cap`."""
  return min(1 << max(0, int(n) - 1).bit_length(), cap)


@functools.partial(jax.jit, static_argnames=("graphdef", "rules"))
def _target_scores(graphdef: nnx.GraphDef, rules: tuple, params, batch: dict[str, jax.Array]):
  """(log p(target), target == argmax) per position of a packed batch (B x L each). Module-level
  with the model's structure static, so every adapter of one model shares its compilations."""
  with axis_rules(rules):
    logits = nnx.merge(graphdef, params)(
        batch["inputs"], segment_ids=batch["segment_ids"], positions=batch["positions"],
        prefix_mask=batch["prefix_mask"])
  logp = -optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  return logp, jnp.argmax(logits, axis=-1) == batch["targets"]


class HarnessModel(LM):
  """A placed model's params as an `lm_eval.api.model.LM` (see the module docstring)."""

  def __init__(self, tokenizer: Tokenizer, placed: PlacedModel, params, *, layout: str,
               seq_len: int, paradigm_id: int | None = None, batch_size: int = 16,
               max_gen_toks: int = 256):
    super().__init__()
    if seq_len < 2:
      raise ValueError(f"seq_len must be at least 2, got {seq_len}")
    if batch_size < 1 or max_gen_toks < 1:
      raise ValueError(f"batch_size and max_gen_toks must be positive, got {batch_size} and "
                       f"{max_gen_toks}")
    self.tokenizer = tokenizer
    self.placed = placed
    self.params = params
    self.layout = Layout(layout, begin_id=tokenizer.special_id(special_tokens.BEGIN),
                         pad_id=tokenizer.pad_id)
    self.paradigm_id = paradigm_id if layout == "prefix" else None
    self.seq_len = seq_len
    self.batch_size = batch_size
    self.max_gen_toks = max_gen_toks
    self.eos_id = tokenizer.special_id(special_tokens.EOS)
    self._replicated = NamedSharding(placed.mesh, PartitionSpec())
    # The rules table as a static (hashable) argument of the jitted forward pass.
    self._rules = tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in placed.rules)

  @property
  def layout_tokens(self) -> int:
    """Positions a request takes besides its context and continuation (the paradigm token)."""
    return int(self.paradigm_id is not None)

  # ------------------------------------------------------------------ token-level scoring

  def _fit(self, context: Sequence[int], continuation: Sequence[int]) -> Pair:
    """The request cut to `seq_len` positions: context tokens dropped from the left."""
    room = self.seq_len - self.layout_tokens - len(continuation)
    if room < 0:
      raise ValueError(f"a continuation of {len(continuation)} tokens does not fit seq_len "
                       f"{self.seq_len} (with {self.layout_tokens} layout token(s))")
    return list(context)[max(0, len(context) - room):], list(continuation)

  def _run(self, fn, *args):
    with jax.set_mesh(self.placed.mesh), axis_rules(self.placed.rules):
      return fn(*args)

  def _forward(self, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-position target log-probabilities and greedy matches of `batch_size` packed rows (one
    shape: a single compiled program)."""
    n = len(rows["inputs"])
    # Extra rows are all padding (segment 0): scored nowhere, and they keep the shape fixed.
    batch = {k: np.zeros((self.batch_size,) + v.shape[1:], v.dtype) for k, v in rows.items()}
    for k, v in rows.items():
      batch[k][:n] = v
    batch = {k: jax.device_put(v, self._replicated) for k, v in batch.items()}
    logp, greedy = jax.device_get(self._run(_target_scores, self.placed.graphdef, self._rules,
                                            self.params, batch))
    return logp[:n], greedy[:n]

  def score_tokens(self, pairs: Sequence[Pair], *,
                   disable_tqdm: bool = True) -> list[tuple[float, bool]]:
    """(sum of log p(continuation token), whether greedy decoding gives the continuation) of
    each (context ids, continuation ids) pair, in order; an empty continuation scores (0, True)."""
    fitted = [self._fit(c, t) for c, t in pairs]
    cut = sum(len(f[0]) < len(p[0]) for f, p in zip(fitted, pairs))
    if cut:
      log_warning(f"{cut} of {len(pairs)} requests exceed seq_len {self.seq_len}: their contexts "
                  "lose tokens from the left")
    todo = sorted((i for i, (_, t) in enumerate(fitted) if t),
                  key=lambda i: -(len(fitted[i][0]) + len(fitted[i][1])))
    out = [(0.0, True)] * len(fitted)
    with tqdm(total=len(todo), disable=disable_tqdm, desc="birdie_jax scoring") as progress:
      for start in range(0, len(todo), _PACK_REQUESTS):
        chunk = todo[start:start + _PACK_REQUESTS]
        for i, score in zip(chunk, self._score_packed([fitted[i] for i in chunk], progress)):
          out[i] = score
    return out

  def _score_packed(self, pairs: Sequence[Pair], progress) -> list[tuple[float, bool]]:
    """`score_tokens` of fitted, non-empty pairs, packed in their order into rows."""
    segments = [self.layout.segment(np.asarray(c, np.int32), np.asarray(t, np.int32),
                                    self.paradigm_id) for c, t in pairs]
    rows = self.layout.pack(segments, self.seq_len)
    out = []
    for start in range(0, len(rows["inputs"]), self.batch_size):
      batch = {k: v[start:start + self.batch_size] for k, v in rows.items()}
      logp, greedy = self._forward(batch)
      # The packer fills rows in order, segment ids 1, 2, ... within a row: walking rows and
      # their segments in that order meets the requests in order; a request's scored positions
      # are its segment's loss_mask (the continuation).
      for r, segment_ids in enumerate(batch["segment_ids"]):
        for s in range(1, int(segment_ids.max()) + 1):
          where = (segment_ids == s) & (batch["loss_mask"][r] > 0)
          out.append((float(np.sum(logp[r][where], dtype=np.float64)),
                      bool(np.all(greedy[r][where]))))
          progress.update(1)
    assert len(out) == len(pairs)
    return out

  def rolling_windows(self, ids: Sequence[int]) -> list[Pair]:
    """lm-eval's disjoint rolling windows over a document's ids, as (context, continuation)
    pairs that each fit `seq_len` with BEGIN and the paradigm token; the continuations
    concatenate to `ids`."""
    window = self.seq_len - 1 - self.layout_tokens
    if window < 1:
      raise ValueError(f"seq_len {self.seq_len} leaves no room for a rolling window")
    pairs = []
    for context, continuation in map(lm_utils.make_disjoint_window,
                                     lm_utils.get_rolling_token_windows(
                                         token_list=list(ids), prefix_token=_NO_TOKEN,
                                         max_seq_len=window, context_len=1)):
      pairs.append(([t for t in context if t != _NO_TOKEN], list(continuation)))
    return pairs

  # ------------------------------------------------------------------ lm_eval's interface

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    """(log p(continuation | context), is_greedy) of each request's (context, continuation)."""
    return self.score_tokens([encode_pair(self.tokenizer, *r.args) for r in requests],
                             disable_tqdm=disable_tqdm)

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Each request's document log-likelihood, summed over its rolling windows."""
    windows, owner = [], []
    for i, request in enumerate(requests):
      pairs = self.rolling_windows(self.tokenizer.encode(request.args[0]).tolist())
      windows += pairs
      owner += [i] * len(pairs)
    totals = np.zeros(len(requests), np.float64)
    for i, (logp, _) in zip(owner, self.score_tokens(windows, disable_tqdm=disable_tqdm)):
      totals[i] += logp
    return [float(t) for t in totals]

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Greedy continuations of each request's context, cut at its `until` strings."""
    jobs = []
    for context, gen_kwargs in (r.args for r in requests):
      kwargs = normalize_gen_kwargs(dict(gen_kwargs or {}), self.max_gen_toks)
      if kwargs.get("do_sample") and float(kwargs.get("temperature", 0.0)) > 0:
        raise ValueError("birdie_jax decodes greedily; a task asks for sampling "
                         f"(do_sample with temperature {kwargs['temperature']})")
      until = [s for s in kwargs["until"] if s]
      jobs.append((self.tokenizer.encode(context).tolist(), until, int(kwargs["max_gen_toks"])))
    out = [""] * len(jobs)
    with tqdm(total=len(jobs), disable=disable_tqdm, desc="birdie_jax generating") as progress:
      for max_new in sorted({m for _, _, m in jobs}):
        group = sorted((i for i, j in enumerate(jobs) if j[2] == max_new),
                       key=lambda i: -len(jobs[i][0]))
        for start in range(0, len(group), self.batch_size):
          chunk = group[start:start + self.batch_size]
          for i, ids in zip(chunk, self.generate_ids([jobs[i][0] for i in chunk], max_new)):
            out[i] = cut_at(self.tokenizer.decode(ids), jobs[i][1])
          progress.update(len(chunk))
    return out

  def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy ids after each prompt (at most `batch_size` of them), up to its first EOS
    (excluded) or `max_new_tokens`."""
    # Prompt positions: the context, the paradigm token (prefix layout) and BEGIN.
    room = self.seq_len - max_new_tokens - self.layout_tokens - 1
    if room < 0:
      raise ValueError(f"max_gen_toks {max_new_tokens} leaves no room for a prompt in seq_len "
                       f"{self.seq_len}")
    if any(len(p) > room for p in prompts):
      log_warning(f"prompts longer than {room} tokens (seq_len {self.seq_len} less max_gen_toks "
                  f"{max_new_tokens} and the layout's tokens) lose tokens from the left")
    prompts = [np.asarray(p[max(0, len(p) - room):], np.int32) for p in prompts]
    length = _bucket(max(len(p) for p in prompts) + self.layout_tokens + 1,
                     self.seq_len - max_new_tokens)
    padded = list(prompts) + [prompts[0]] * (self.batch_size - len(prompts))
    batch = self.layout.prompts(padded, self.paradigm_id, length)
    batch = {k: jax.device_put(v, self._replicated) for k, v in batch.items()}
    tokens = self._run(lambda: generate(
        self.placed.model(self.params), batch, max_new_tokens=max_new_tokens,
        rng=jax.random.key(0), eos_id=self.eos_id, pad_id=self.tokenizer.pad_id))
    out = []
    for row in np.asarray(jax.device_get(tokens))[:len(prompts)].tolist():
      out.append(row[:row.index(self.eos_id)] if self.eos_id in row else row)
    return out


def cut_at(text: str, until: Sequence[str]) -> str:
  """`text` up to the first occurrence of any of the `until` strings (all of it if none)."""
  ends = [text.find(s) for s in until if s]
  ends = [e for e in ends if e >= 0]
  return text[:min(ends)] if ends else text
