"""`bench profile` at tiny sizes on CPU: every category printed, the rows add up to the traced
step, attention time only in a model with attention and scan time only in one with a recurrence;
the time-sharing arithmetic against hand-computed intervals; a GPU-shaped trace and module (stream
lines, cuBLAS / Triton / NCCL kernels) classified as computed by hand."""
import contextlib
import io
import json

import jax
import pytest

from birdie_jax.bench import profile

_MODELS = ("hawk-tiny", "transformer-tiny")


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
  """Per model: the JSON row the command appended and what it printed."""
  tmp = tmp_path_factory.mktemp("profile")
  out = {}
  for model in _MODELS:
    results, printed = tmp / f"{model}.jsonl", io.StringIO()
    with contextlib.redirect_stdout(printed):
      profile.main([f"--model={model}", "--batch=2", "--seq_len=32", "--vocab=200", "--steps=2",
                    f"--trace_dir={tmp / model}", f"--results={results}"])
    (line,) = results.read_text().splitlines()
    out[model] = (json.loads(line), printed.getvalue())
  return out


def test_every_category_is_printed_and_the_trace_is_kept(profiles, tmp_path_factory):
  for model, (row, printed) in profiles.items():
    table = [line.split() for line in printed.splitlines()]
    labels = {cells[0] for cells in table if cells}
    for category in profile.CATEGORIES:
      assert profile._LABELS.get(category, category) in labels, (model, category)
    assert "step" in labels
    assert list((tmp_path_factory.getbasetemp()).glob(
        f"profile*/{model}/plugins/profile/*/perfetto_trace.json.gz"))


def test_categories_add_up_to_the_step(profiles):
  for model, (row, _) in profiles.items():
    ms, kernel = row["ms"], row["kernel_ms"]
    assert set(ms) == set(profile.CATEGORIES)
    assert all(v >= 0 for v in ms.values()), (model, ms)
    assert row["step_ms"] > 0
    assert sum(ms.values()) == pytest.approx(row["step_ms"], rel=1e-6)
    # A shared instant is never more than the op's own time, and the busy part of the step is
    # covered by the ops' summed durations.
    for category, value in kernel.items():
      assert ms[category] <= value + 1e-9, (model, category)
    assert row["step_ms"] - ms["idle"] <= sum(kernel.values()) + 1e-9
    assert ms["other"] <= 0.05 * row["step_ms"], (model, row["top_other"])
    for category in ("matmuls", "elementwise", "cross_entropy", "optimizer"):
      assert ms[category] > 0, (model, category)
    assert ms["collectives"] == 0  # one device


def test_attention_only_with_attention_and_scan_only_with_a_recurrence(profiles):
  hawk, transformer = profiles["hawk-tiny"][0]["ms"], profiles["transformer-tiny"][0]["ms"]
  assert hawk["scan"] > 0 and hawk["attention"] == 0
  assert transformer["attention"] > 0 and transformer["scan"] == 0


def test_time_is_shared_among_overlapping_ops():
  ops = [profile.OpEvent(1, 5, "a", "matmuls"), profile.OpEvent(3, 8, "b", "scan"),
         profile.OpEvent(9, 12, "c", "matmuls"),  # runs past the window: 1 counts
         profile.OpEvent(14, 15, "d", "scan")]  # outside every window
  got = profile.attribute([(0, 10)], ops)
  # matmuls alone on [1, 3) and [9, 10), shares [3, 5) with scan; scan alone on [5, 8).
  assert got["shared"] == pytest.approx({"matmuls": 2 + 1 + 1, "scan": 1 + 3, "idle": 2})
  assert got["kernel"] == pytest.approx({"matmuls": 4 + 1, "scan": 5})
  assert got["wall"] == 10
  two = profile.attribute([(0, 10), (13, 16)], ops)
  assert two["shared"]["scan"] == pytest.approx(5) and two["shared"]["idle"] == pytest.approx(4)


def test_a_bad_model_or_trace_dir_ends_in_one_line(capsys, tmp_path):
  assert profile.model_spec("gated_ssm-150m") == "gated_ssm:150m"
  assert profile.model_spec("hawk:rg") == "hawk:rg"
  with pytest.raises(SystemExit):
    profile.main(["--model=hawk-2b"])
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'hawk:2b' is not family:preset" in err
  (tmp_path / "file").write_text("")
  with pytest.raises(SystemExit):  # before any compile
    profile.main(["--model=hawk-tiny", f"--trace_dir={tmp_path / 'file'}"])
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "is a file, not a folder" in err


# A GPU-shaped module and trace (no GPU needed): kernels on two streams carrying `hlo_op` and
# `hlo_module` stats, a CUPTI overhead line and host-thread ops that must not count.
_GPU_HLO = """HloModule jit_step, is_scheduled=true

%fused_exp (param_0: bf16[8,16]) -> bf16[8,16] {
  %param_0 = bf16[8,16]{1,0} parameter(0)
  ROOT %exponential.1 = bf16[8,16]{1,0} exponential(%param_0), metadata={op_name="jit(step)/jvp(attention)/exp"}
}

%gemm_computation (p0: bf16[8,16], p1: bf16[16,16]) -> bf16[8,16] {
  %p0 = bf16[8,16]{1,0} parameter(0)
  %p1 = bf16[16,16]{1,0} parameter(1)
  ROOT %dot.2 = bf16[8,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(step)/jvp()/dot_general"}
}

%fused_select (q0: pred[16], q1: f32[16], q2: f32[16]) -> f32[16] {
  %q0 = pred[16]{0} parameter(0)
  %q1 = f32[16]{0} parameter(1)
  %q2 = f32[16]{0} parameter(2)
  ROOT %select.4 = f32[16]{0} select(%q0, %q1, %q2), metadata={op_name="jit(step)/optimizer/jit(_where)/select_n"}
}

%fused_reduce (r0: f32[8,100]) -> f32[8] {
  %r0 = f32[8,100]{1,0} parameter(0)
  %c = f32[] constant(0)
  ROOT %reduce.5 = f32[8]{0} reduce(%r0, %c), dimensions={1}, to_apply=%add, metadata={op_name="jit(step)/jvp()/reduce_max"}
}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add.6 = f32[] add(%x, %y)
}

ENTRY %main.1 (a: bf16[8,16], w: bf16[16,16], logits: f32[8,100], g: f32[16], m: pred[16]) -> f32[8] {
  %a = bf16[8,16]{1,0} parameter(0)
  %w = bf16[16,16]{1,0} parameter(1)
  %logits = f32[8,100]{1,0} parameter(2)
  %g = f32[16]{0} parameter(3)
  %m = pred[16]{0} parameter(4)
  %loop_exponential_fusion = bf16[8,16]{1,0} fusion(%a), kind=kLoop, calls=%fused_exp, metadata={op_name="jit(step)/jvp(attention)/exp"}
  %gemm_fusion_dot = bf16[8,16]{1,0} fusion(%a, %w), kind=kCustom, calls=%gemm_computation, backend_config={"fusion_backend_config":{"kind":"__triton_gemm"}}
  %cublas-gemm.1 = (bf16[8,16]{1,0}, s8[1024]{0}) custom-call(%a, %w), custom_call_target="__cublas$gemm", metadata={op_name="jit(step)/transpose(jvp())/dot_general"}
  %all-reduce-start = f32[16]{0} all-reduce-start(%g), replica_groups={}, to_apply=%add, metadata={op_name="jit(step)/optimizer/psum"}
  %custom-call.7 = bf16[8,16]{1,0} custom-call(%a), custom_call_target="__gpu$xla.gpu.triton", metadata={op_name="jit(step)/jvp()/linear_scan/jit(linear_scan)/pallas_call"}
  %loop_select_fusion = f32[16]{0} fusion(%m, %g, %g), kind=kLoop, calls=%fused_select
  %input_reduce_fusion = f32[8]{0} fusion(%logits), kind=kInput, calls=%fused_reduce, metadata={op_name="jit(step)/jvp()/reduce_max"}
  %sort.1 = f32[16]{0} sort(%g), dimensions={0}, to_apply=%add
  %while.3 = f32[16]{0} while(%g), condition=%add, body=%add
  ROOT %tuple = (f32[8]{0}) tuple(%input_reduce_fusion)
}
"""


def _xspace(events: dict[str, list[tuple]], host_ops: list[tuple]) -> str:
  """An XSpace text proto: a device plane with `events` per line name ((kernel, start_us,
  end_us, hlo_op or None, module)), a host plane with one traced step [0, 100) us and
  `host_ops` ((hlo_op, start_us, end_us)) on a runtime thread."""
  names, stat_ids = {}, {"hlo_op": 1, "hlo_module": 2, "step_num": 3}

  def meta(name):
    return names.setdefault(name, len(names) + 1)

  def event(name, start, end, stats):
    text = " ".join(f'stats {{ metadata_id: {stat_ids[k]} str_value: "{v}" }}'
                    for k, v in stats.items() if v is not None)
    return (f"events {{ metadata_id: {meta(name)} offset_ps: {int(start * 1e6)} "
            f"duration_ps: {int((end - start) * 1e6)} {text} }}")

  def plane(pid, name, lines):
    body = " ".join(f'lines {{ id: {i} name: "{line}" timestamp_ns: 0 {" ".join(evs)} }}'
                    for i, (line, evs) in enumerate(lines.items()))
    stats = " ".join(f'stat_metadata {{ key: {v} value {{ id: {v} name: "{k}" }} }}'
                     for k, v in stat_ids.items())
    metas = " ".join(f'event_metadata {{ key: {v} value {{ id: {v} name: "{k}" }} }}'
                     for k, v in names.items())
    return f'planes {{ id: {pid} name: "{name}" {body} {metas} {stats} }}'

  device = {line: [event(k, s, e, {"hlo_op": op, "hlo_module": mod}) for k, s, e, op, mod in evs]
            for line, evs in events.items()}
  device_plane = plane(1, "/device:GPU:0", device)
  names.clear()
  host = {"python": [event(profile._STEP_EVENT, 0, 100, {"step_num": "0"})],
          "Host Threads/7": [event(op, s, e, {"hlo_op": op}) for op, s, e in host_ops]}
  return device_plane + plane(2, "/host:CPU", host)


def test_a_gpu_trace_is_read_from_its_stream_lines():
  stream7 = [("loop_exponential_fusion", 10, 20, "loop_exponential_fusion", "jit_step"),
             ("gemm_fusion_dot_kernel", 20, 35, "gemm_fusion_dot", "jit_step"),
             ("sm90_xmma_gemm_bf16", 35, 45, "cublas-gemm.1", "jit_step"),
             ("scan_kernel", 45, 55, "custom-call.7", "jit_step"),
             ("loop_select_fusion", 55, 60, "loop_select_fusion", "jit_step"),
             ("input_reduce_fusion", 60, 62, "input_reduce_fusion", "jit_step"),
             ("sort_kernel", 62, 64, "sort.1", "jit_step"),
             ("MemcpyD2H", 64, 65, "while.3", "jit_step"),  # the loop condition to the host
             ("loop_add_fusion", 66, 67, "fusion.9", "jit_other"),  # another program
             ("ampere_sgemm_128x64_nn", 67, 69, None, None),  # no annotation: by its name
             ("late_kernel", 150, 160, "loop_exponential_fusion", "jit_step")]  # after the step
  stream9 = [("ncclDevKernel_AllReduce_Sum_f32", 40, 50, "all-reduce-start", "jit_step")]
  text = _xspace({"Stream #7(Kernel,MemcpyD2H)": stream7, "Stream #9(Kernel)": stream9,
                  "CUPTI overhead": [("overhead", 0, 100, None, None)]},
                 host_ops=[("loop_exponential_fusion", 0, 90)])
  data = jax.profiler.ProfileData.from_text_proto(text)
  module = profile.parse_hlo(_GPU_HLO)
  assert module.name == "jit_step" and module.roots["fused_select"] == "select.4"
  assert module.instructions["cublas-gemm.1"].target == "__cublas$gemm"
  ops = profile.trace_ops(data, profile.Classifier(module, vocab=100))
  assert len(ops) == len(stream7) + len(stream9)  # not the overhead line nor the host thread
  got = profile.attribute(profile.step_windows(data), ops)
  us = {k: v / 1e3 for k, v in got["shared"].items()}  # ns -> us
  # Alone, except [40, 45) and [45, 50) where the all-reduce shares the gemm's and the scan's.
  expected = {"attention": 10, "matmuls": 15 + 5 + 2.5 + 2, "collectives": 2.5 + 2.5,
              "scan": 2.5 + 5, "optimizer": 5, "cross_entropy": 2, "other": 2 + 1 + 1,
              "idle": 100 - (65 - 10) - (69 - 66)}
  assert us == pytest.approx(expected)
  assert got["kernel"]["matmuls"] / 1e3 == pytest.approx(15 + 10 + 2)
