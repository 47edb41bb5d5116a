"""`python -m birdie_jax.bench profile`: where one train step's device time goes, by category.

    python -m birdie_jax.bench profile --model=hawk-1.4b [--batch=8 --seq_len=2048 --steps=3
        --bidirectional --loss_chunk=N --trace_dir=DIR]

It builds the train step that `bench train` times (the same config, synthetic packed batch and
single device), runs 2 warm-up steps, times `--steps` untraced steps (median, as `bench train`
does), then records a `jax.profiler` trace of `--steps` more. Each traced step is one
`StepTraceAnnotation` that ends after `block_until_ready`, so it holds all of the step's device
work. The trace stays in `--trace_dir` (default: a new folder under `workdirs/profile/`), with
TensorBoard's `.xplane.pb` and a `perfetto_trace.json.gz` for ui.perfetto.dev.

Reading the trace (`jax.profiler.ProfileData` on the `.xplane.pb`): the device ops are the kernels
on the GPU stream lines (or the "XLA Ops" line of a TPU) and, on CPU, the XLA thunks on the host
threads. Each op's HLO instruction (the `hlo_op` stat, else the event's name) is looked up in the
compiled module (`compiled.as_text()`) and classified, first rule that applies:

  1. collectives: all-reduce, all-gather, reduce-scatter, collective-permute, all-to-all, send /
     recv (their -start / -done halves and fusions holding them), whatever scope they are in;
  2. the innermost `jax.named_scope` in the op's metadata `op_name` (for a fusion: its own, its
     root's, else the most common among its ops): "attention" (models/attention.py: the mask
     and the attention core, not the projections), "linear_scan" -> scan (models/recurrence.py),
     "cross_entropy" (the loss), "optimizer" (train/step.py: the update, clipping norm and the
     non-finite guard);
  3. matmuls: dot, convolution, cuBLAS / cuDNN gemm custom-calls, fusions holding a dot (Triton
     gemms); cuDNN fused attention custom-calls -> attention;
  4. cross_entropy: an unscoped op with an operand or result whose last dimension is the
     vocabulary (the loss head's softmax and its gradient, while the loss has no scope);
  5. elementwise: arithmetic, reductions (norms), data movement (copies, transposes, gathers,
     slices) and fusions of only these;
  6. anything else is "other", and the ops that put most time there are printed by name so the
     rules can be improved. An op of the trace with no instruction in the module (another
     program's, or a kernel XLA did not annotate) goes by its kernel name (gemm, nccl, fmha), else
     to "other" too.

The table: per category the ms per step, in which each instant of the step is split equally
among the ops running at it (so rows that overlap, e.g. a collective under a matmul, share it
and the rows add up to the step), its % of the step, and `kernel_ms`, the ops' summed durations
(overlap counted twice). idle = step wall time minus the union of the ops' intervals: dispatch,
host work, launch gaps and the wait for the result. While a profiler session is active XLA runs
its CUDA graphs (command buffers) op by op, so the traced step can be slower than the untraced
median printed next to it; the categories describe the traced one.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
import re
import tempfile
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from birdie_jax import cli
from birdie_jax.bench import harness
from birdie_jax.bench import train as bench_train
from birdie_jax.errors import ConfigError
from birdie_jax.models.remat import REMAT_CHOICES
from birdie_jax.parallel.mesh import make_mesh
from birdie_jax.train.state import init_train_state, make_train_setup
from birdie_jax.train.step import make_train_step
from birdie_jax.workdir import check_writable

CATEGORIES = ("matmuls", "attention", "scan", "elementwise", "cross_entropy", "optimizer",
              "collectives", "other", "idle")
_LABELS = {"elementwise": "elementwise/norm", "cross_entropy": "cross-entropy"}
# Name-scope tokens of `op_name` -> category (also the jitted functions' names, which JAX puts in
# the name stack as `jit(name)`, in case a scope is lost).
SCOPES = {"attention": "attention", "dot_product_attention": "attention",
          "linear_scan": "scan", "pallas_scan": "scan", "sequence_parallel_scan": "scan",
          "cross_entropy": "cross_entropy", "chunked_token_losses": "cross_entropy",
          "softmax_cross_entropy_with_integer_labels": "cross_entropy",
          "optimizer": "optimizer"}
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all",
                "ragged-all-to-all", "collective-broadcast", "send", "recv")
_CONTROL = {"while", "conditional", "call"}  # containers: their body's ops are the events
_MATMULS = {"dot", "convolution", "ragged-dot", "scaled-dot"}
_ELEMENTWISE = set("""
abs add and atan2 bitcast bitcast-convert broadcast cbrt ceil clamp clz compare complex
concatenate constant convert copy copy-start copy-done cos divide dynamic-reshape dynamic-slice
dynamic-update-slice erf exp exponential exponential-minus-one expm1 floor gather
get-tuple-element imag iota is-finite log log-plus-one log1p logistic map maximum minimum
multiply negate not or pad parameter popcnt power real reduce reduce-precision reduce-window
remainder reshape reverse round-nearest-afz round-nearest-even rsqrt scatter select
select-and-scatter shift-left shift-right-arithmetic shift-right-logical sign sine cosine sin
slice sqrt subtract tan tanh transpose tuple xor optimization-barrier partition-id replica-id
stochastic-convert after-all add-dependency domain
""".split())
# Device events with no HLO instruction (e.g. kernels inside a CUDA graph): by kernel name.
_KERNEL_NAMES = (("attention", ("fmha", "flash_fwd", "flash_bwd")),
                 ("collectives", ("nccl",)),
                 ("matmuls", ("gemm", "xmma", "cutlass", "cublas", "matmul")))
_STEP_EVENT = "birdie_profile_step"


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One HLO instruction of the compiled module, as `compiled.as_text()` prints it."""

  name: str
  opcode: str
  op_name: str  # metadata op_name: the JAX name stack, scopes included
  shape: str  # the result's shape text
  operands: tuple[str, ...]
  calls: tuple[str, ...]  # computations a fusion / async op runs
  target: str  # custom_call_target


@dataclasses.dataclass
class HloModule:
  """The instructions of a module by name and each computation's instructions and root."""

  name: str
  instructions: dict[str, Instruction]
  computations: dict[str, list[str]]
  roots: dict[str, str]


_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([^\s(]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(ROOT\s+)?%?([^\s=]+)\s*=\s*(.*)$")
_OP_NAME = re.compile(r'op_name="((?:[^"\\]|\\.)*)"')
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
_CALLS = re.compile(r"\bcalls=(\{[^}]*\}|%?[\w.\-]+)")
_DIMS = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def _closing(text: str, start: int) -> int:
  """The index just after the parenthesis that closes the one at `text[start]`."""
  depth = 0
  for i in range(start, len(text)):
    depth += {"(": 1, ")": -1}.get(text[i], 0)
    if depth == 0:
      return i + 1
  return len(text)


def parse_hlo(text: str) -> HloModule:
  """The instructions of an HLO module's text (`compiled.as_text()`)."""
  module = HloModule(name="", instructions={}, computations={}, roots={})
  computation = None
  for line in text.splitlines():
    if line.startswith("HloModule "):
      module.name = line.split()[1].rstrip(",")
      continue
    if not line.startswith((" ", "\t")):
      header = _HEADER.match(line)
      computation = header.group(1) if header else None
      if computation:
        module.computations[computation] = []
      continue
    match = _INSTRUCTION.match(line)
    if not match or computation is None:
      continue
    root, name, rest = match.groups()
    shape_end = _closing(rest, 0) if rest.startswith("(") else rest.find(" ")
    shape, after = rest[:shape_end], rest[shape_end:].lstrip()
    opcode = re.match(r"[\w\-]+", after)
    if opcode is None:
      continue
    operands_end = _closing(after, opcode.end())
    op_name = _OP_NAME.search(after)
    target = _TARGET.search(after)
    calls = _CALLS.search(after[operands_end:])
    module.instructions[name] = Instruction(
        name=name, opcode=opcode.group(0), op_name=op_name.group(1) if op_name else "",
        shape=shape, operands=tuple(re.findall(r"%([\w.\-]+)", after[:operands_end])),
        calls=tuple(re.findall(r"[\w.\-]+", calls.group(1).replace("%", " "))) if calls else (),
        target=target.group(1) if target else "")
    module.computations[computation].append(name)
    if root:
      module.roots[computation] = name
  return module


def _scope(op_name: str) -> str | None:
  """The category of the innermost known scope in an `op_name`, or None."""
  for token in reversed(re.findall(r"[A-Za-z_]\w*", op_name)):
    if token in SCOPES:
      return SCOPES[token]
  return None


def _last_dims(shape: str) -> list[int]:
  """The last dimension of each array of rank >= 2 in a shape text."""
  return [int(dims.split(",")[-1]) for dims in _DIMS.findall(shape) if "," in dims]


class Classifier:
  """The category of each instruction of `module` (the rules of the module docstring)."""

  def __init__(self, module: HloModule, vocab: int | None = None):
    self.module = module
    self.vocab = vocab
    self._cache: dict[str, str] = {}

  def inner(self, instruction: Instruction) -> list[Instruction]:
    """The instructions of the computations `instruction` calls, transitively."""
    found, todo = [], list(instruction.calls)
    while todo:
      for name in self.module.computations.get(todo.pop(), ()):
        found.append(self.module.instructions[name])
        todo.extend(self.module.instructions[name].calls)
    return found

  def scope(self, instruction: Instruction, inner: list[Instruction]) -> str | None:
    """The scope category of an instruction: its own op_name, its root's, the most common."""
    scope = _scope(instruction.op_name)
    if scope or not inner:
      return scope
    root = self.module.roots.get(instruction.calls[0]) if instruction.calls else None
    if root and (scope := _scope(self.module.instructions[root].op_name)):
      return scope
    counts = collections.Counter(filter(None, (_scope(i.op_name) for i in inner)))
    return counts.most_common(1)[0][0] if counts else None

  def category(self, name: str) -> str | None:
    """The category of instruction `name`; None for control flow (not an op of its own)."""
    if name not in self._cache:
      self._cache[name] = self._classify(self.module.instructions[name])
    return self._cache[name]

  def _classify(self, instruction: Instruction) -> str | None:
    if instruction.opcode in _CONTROL:
      return None
    inner = self.inner(instruction)
    everything = [instruction, *inner]
    opcodes = {i.opcode for i in everything}
    if any(op.startswith(_COLLECTIVES) for op in opcodes):
      return "collectives"
    if scope := self.scope(instruction, inner):
      return scope
    targets = " ".join(i.target for i in everything).lower()
    if any(word in targets for word in ("fmha", "flash")):
      return "attention"
    if opcodes & _MATMULS or any(word in targets for word in ("gemm", "matmul", "conv")):
      return "matmuls"
    if self.vocab and self._vocab_wide(instruction):
      return "cross_entropy"
    if opcodes <= _ELEMENTWISE | {"fusion", "async-start", "async-done"}:
      return "elementwise"
    return "other"

  def _vocab_wide(self, instruction: Instruction) -> bool:
    shapes = [instruction.shape] + [self.module.instructions[o].shape
                                    for o in instruction.operands
                                    if o in self.module.instructions]
    return any(self.vocab in _last_dims(shape) for shape in shapes)


@dataclasses.dataclass(frozen=True)
class OpEvent:
  """One device op of the trace: when it ran (ns) and what it was."""

  start: float
  end: float
  name: str  # the HLO instruction, or the kernel / event name when it maps to none
  category: str


def _device_lines(plane) -> list:
  """The lines of a device plane that hold its ops once: the GPU streams, else 'XLA Ops'."""
  lines = list(plane.lines)
  streams = [line for line in lines if line.name.startswith("Stream")]
  return streams or [line for line in lines if line.name == "XLA Ops"]


def trace_ops(data, classifier: Classifier) -> list[OpEvent]:
  """The device ops of a `jax.profiler.ProfileData`, classified.

  With a device plane (GPU, TPU) its op lines are read; without one (CPU) the XLA thunks of the
  host threads, which carry the `hlo_op` stat. Ops of another module count as 'other'.
  """
  planes = list(data.planes)
  devices = [p for p in planes if p.name.startswith("/device:") and _device_lines(p)]
  sources = ([(line, True) for p in devices for line in _device_lines(p)] if devices else
             [(line, False) for p in planes if p.name.startswith("/host:") for line in p.lines])
  instructions = classifier.module.instructions
  ops = []
  for line, on_device in sources:
    for event in line.events:
      stats = dict(event.stats)
      if not on_device and "hlo_op" not in stats:
        continue  # host work: Python, the runtime's own events
      candidates = [stats.get("hlo_op"), str(stats.get("long_name", "")).lstrip("%").split(" ")[0],
                    event.name]
      name = next((c for c in candidates if c in instructions), None)
      module = stats.get("hlo_module")
      if name is not None and module in (None, classifier.module.name):
        category = classifier.category(name)
        if category is None:  # a loop's own event: the thunks of its body are the ops on CPU,
          if not on_device:   # on a GPU it copies the loop condition to the host
            continue
          category = "other"
      else:
        name = f"{module}/{stats['hlo_op']}" if "hlo_op" in stats else event.name
        lower = name.lower()
        category = next((c for c, words in _KERNEL_NAMES if any(w in lower for w in words)),
                        "other")
      ops.append(OpEvent(event.start_ns, event.start_ns + event.duration_ns, name, category))
  return ops


def step_windows(data) -> list[tuple[float, float]]:
  """The (start, end) ns of each traced step (its `StepTraceAnnotation`)."""
  return sorted((e.start_ns, e.start_ns + e.duration_ns) for p in data.planes
                if p.name.startswith("/host:") for line in p.lines for e in line.events
                if e.name == _STEP_EVENT)


def attribute(windows: list[tuple[float, float]], ops: Iterable[OpEvent]) -> dict[str, Any]:
  """Each category's ns inside the windows, every instant split equally among the ops running
  then; idle is what no op covers. Also each op's ns (`by_op`) and the summed op durations
  (`kernel`). Totals over all windows."""
  ops = list(ops)
  shared = collections.defaultdict(float)
  kernel = collections.defaultdict(float)
  by_op = collections.defaultdict(float)
  wall = 0.0
  for lo, hi in windows:
    wall += hi - lo
    inside = [op for op in ops if op.end > lo and op.start < hi and op.end > op.start]
    points = sorted([(max(op.start, lo), 1, i) for i, op in enumerate(inside)]
                    + [(min(op.end, hi), -1, i) for i, op in enumerate(inside)])
    running: set[int] = set()
    previous = lo
    for t, kind, i in points:
      if running and t > previous:
        share = (t - previous) / len(running)
        for j in running:
          shared[inside[j].category] += share
          by_op[(inside[j].name, inside[j].category)] += share
      previous = t
      if kind == 1:
        running.add(i)
      else:
        running.discard(i)
    for op in inside:
      kernel[op.category] += min(op.end, hi) - max(op.start, lo)
  shared["idle"] = max(wall - sum(shared.values()), 0.0)  # not -1e-9 from rounding
  return {"wall": wall, "shared": dict(shared), "kernel": dict(kernel), "by_op": dict(by_op)}


def model_spec(text: str) -> str:
  """argparse type: `family-preset` (or `family:preset`), e.g. hawk-1.4b, gated_ssm-150m;
  returns `family:preset`."""
  family, sep, preset = text.partition(":") if ":" in text else text.rpartition("-")
  return bench_train.model_specs(f"{family}:{preset}" if sep else text)[0]


def _latest_xplane(trace_dir: pathlib.Path) -> pathlib.Path:
  runs = (trace_dir / "plugins" / "profile").iterdir()
  run = max(runs, key=os.path.getmtime)
  return next(run.glob("*.xplane.pb"))


def _compile_with_metadata(lowered):
  """`lowered.compile()`, with the op metadata in the persistent compilation cache's key: by
  default the key ignores it, so an executable cached before a `named_scope` was added would come
  back with the old op_names and its ops would be classified by them."""
  flag = "jax_compilation_cache_include_metadata_in_key"
  previous = getattr(jax.config, flag)
  jax.config.update(flag, True)
  try:
    return lowered.compile()
  finally:
    jax.config.update(flag, previous)


def profile(spec: str, args) -> dict[str, Any]:
  """Compiles the train step of `spec`, times and traces it; the breakdown of one step."""
  config = bench_train.model_config(spec, bidirectional=args.bidirectional,
                                    scan_impl=args.scan_impl, remat=args.remat,
                                    scan_layers=args.layers == "scan",
                                    loss_chunk=args.loss_chunk)
  config.train.batch_size, config.train.seq_len = args.batch, args.seq_len
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  setup = make_train_setup(config, args.vocab, mesh)
  state = init_train_state(config, setup, args.vocab)
  batch = bench_train.synthetic_batch(np.random.default_rng(0), args.batch, args.seq_len,
                                      args.vocab, args.bidirectional)
  with jax.set_mesh(mesh):
    batch = {k: jnp.asarray(v) for k, v in batch.items()}
    compiled = _compile_with_metadata(make_train_step(setup, config.train).lower(state, batch))
    classifier = Classifier(parse_hlo(compiled.as_text()), vocab=args.vocab)

    def run(state):
      state, metrics = compiled(state, batch)
      return state, metrics["loss"]

    state, untraced = bench_train._time_steps(run, state, args.steps)  # 2 warm-up, median
    trace_dir = pathlib.Path(args.trace_dir)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for i in range(args.steps):
        with jax.profiler.StepTraceAnnotation(_STEP_EVENT, step_num=i):
          state, loss = run(state)
          jax.block_until_ready(loss)
  data = jax.profiler.ProfileData.from_file(str(_latest_xplane(trace_dir)))
  windows = step_windows(data)
  if len(windows) != args.steps:
    raise RuntimeError(f"the trace holds {len(windows)} steps, not {args.steps}")
  if jax.devices()[0].platform != "cpu" and not any(
      p.name.startswith("/device:") and _device_lines(p) for p in data.planes):
    # The host threads would then hold only kernel launches, not what the device did.
    raise RuntimeError(f"the trace in {trace_dir} holds no device activity: the device tracer "
                       "did not run (on a GPU: CUPTI missing or not permitted?)")
  result = attribute(windows, trace_ops(data, classifier))
  per_step = 1e-6 / args.steps  # ns over all steps -> ms per step
  row = {"model": f"{spec}{':bidir' if args.bidirectional else ''}",
         "step_ms": result["wall"] * per_step, "untraced_step_ms": untraced * 1e3,
         "batch": args.batch, "seq_len": args.seq_len, "vocab": args.vocab,
         "remat": args.remat, "layers": args.layers, "scan": args.scan_impl,
         "loss_chunk": args.loss_chunk,
         "trace_dir": str(trace_dir)}
  row["ms"] = {c: result["shared"].get(c, 0.0) * per_step for c in CATEGORIES}
  row["kernel_ms"] = {c: result["kernel"].get(c, 0.0) * per_step for c in CATEGORIES[:-1]}
  ops = sorted(result["by_op"].items(), key=lambda kv: -kv[1])
  module = classifier.module
  row["top_ops"] = [(_describe(module, name), category, ns * per_step)
                    for (name, category), ns in ops[:args.top]]
  row["top_other"] = [(_describe(module, name), ns * per_step) for (name, category), ns in ops
                      if category == "other"][:args.top]
  return row


def _describe(module: HloModule, name: str, width: int = 70) -> str:
  """An op's instruction name and the end of its op_name (what JAX code it came from)."""
  instruction = module.instructions.get(name)
  if instruction is None:
    return name
  where = instruction.op_name or next(
      (i.op_name for i in Classifier(module).inner(instruction) if i.op_name), "")
  where = where if len(where) <= width else "..." + where[-width:]
  return f"{name} [{instruction.opcode}] {where}".rstrip()


def print_breakdown(row: dict[str, Any]) -> None:
  """The category table, the top ops and the top unclassified ops of one profile."""
  step = row["step_ms"]
  print(f"\n{row['model']}: batch {row['batch']} x {row['seq_len']}, step {step:.3f} ms traced "
        f"({row['untraced_step_ms']:.3f} ms untraced median); trace in {row['trace_dir']}")
  rows = [{"category": _LABELS.get(c, c), "ms_per_step": row["ms"][c],
           "pct_of_step": 100 * row["ms"][c] / step if step else 0.0,
           "kernel_ms": row["kernel_ms"].get(c)} for c in CATEGORIES]
  rows.append({"category": "step", "ms_per_step": step, "pct_of_step": 100.0})
  harness.print_table(rows, ("category", "ms_per_step", "pct_of_step", "kernel_ms"))
  print("\ntop ops (ms per step):")
  for name, category, ms in row["top_ops"]:
    print(f"  {ms:10.4f}  {_LABELS.get(category, category):<16} {name}")
  if row["top_other"]:
    print("\nunclassified ('other') ops (ms per step):")
    for name, ms in row["top_other"]:
      print(f"  {ms:10.4f}  {name}")


def main(argv: list[str]) -> None:
  """Parses flags, profiles the model, prints the breakdown and appends the JSON line."""
  parser = cli.ArgumentParser(prog="python -m birdie_jax.bench profile",
                              description=__doc__.splitlines()[0])
  parser.add_argument("--model", type=model_spec, default="hawk:1.4b",
                      help="family-preset, e.g. hawk-1.4b, transformer-1.4b, hawk-150m, hawk-rg")
  parser.add_argument("--batch", type=cli.positive_int, default=8)
  parser.add_argument("--seq_len", type=cli.positive_int, default=2048)
  parser.add_argument("--vocab", type=cli.positive_int, default=32_000)
  parser.add_argument("--steps", type=cli.positive_int, default=3,
                      help="traced steps (and untraced timed ones, after 2 warm-up steps)")
  parser.add_argument("--bidirectional", action="store_true",
                      help="Birdie's bidirectional prefix (a quarter of each document)")
  parser.add_argument("--scan_impl", choices=cli.SCAN_IMPLS, default="auto")
  parser.add_argument("--remat", choices=REMAT_CHOICES, default="none")
  parser.add_argument("--layers", choices=("scan", "loop"), default="scan")
  parser.add_argument("--loss_chunk", type=cli.non_negative_int, default=0,
                      help="model.loss_chunk: 0 the whole batch's logits at once, N positions "
                           "of each row at a time (models/chunked_loss.py)")
  parser.add_argument("--trace_dir", default="",
                      help="where the trace goes (default: a new folder in workdirs/profile/)")
  parser.add_argument("--top", type=cli.positive_int, default=12, help="ops listed")
  parser.add_argument("--results", default=harness.RESULTS, help="JSONL to append to ('' none)")
  args = parser.parse_args(argv)
  try:  # a trace that cannot be written ends here, not after the compile
    if args.trace_dir:
      check_writable(args.trace_dir, hint="pass another --trace_dir")
    else:
      root = pathlib.Path("workdirs") / "profile"
      check_writable(root, hint="pass --trace_dir")
      args.trace_dir = tempfile.mkdtemp(prefix=args.model.replace(":", "-") + "-", dir=root)
  except ConfigError as e:
    cli.fail(parser.prog.removeprefix("python -m "), e)
  row = profile(args.model, args)
  print_breakdown(row)
  harness.append_results([row], "profile", argv, args.results)
