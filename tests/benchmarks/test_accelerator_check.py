"""benchmarks/accelerator_check.py: `--smoke` runs every section at tiny shapes on the CPU and writes one JSON
of real numbers (or a skip with its reason where one is allowed); its step builder builds what training
builds; the step sections import without grain or tensorflow_datasets; a partial result is refused."""

import json
import math
import subprocess
import sys
import textwrap

import jax
import pytest

from tests import REPO_ROOT, benchmark_modules, cpu_env

ac = benchmark_modules.load("accelerator_check")
REAL_CASES_SECTION = ac.cases_section
DTYPES = {"float32", "bfloat16"}


def test_smoke_writes_every_section_with_numbers(tmp_path):
  out = tmp_path / "x.json"
  done = subprocess.run(
    [sys.executable, "benchmarks/accelerator_check.py", "--smoke", "--output", str(out)],
    cwd=REPO_ROOT,
    env=cpu_env(1),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
  assert "[accelerator_check]" in done.stderr and "| side | dtype | batch |" in done.stdout
  result = json.loads(out.read_text())
  sections = result["sections"]
  assert result["smoke"] and set(sections) == set(ac.SECTIONS)
  assert ac.problems(sections, ac.SMOKE) == []
  for name, section in sections.items():
    assert "error" not in section, name
    if "skipped" in section:  # only these two may, and with a reason
      assert name in ("torch", "host_pipeline") and section["skipped"].strip(), (name, section)

  env = sections["environment"]
  assert env["device_count"] == len(env["devices"]) == 1
  assert env["devices"][0]["platform"] == "cpu" and env["devices"][0]["device_kind"]
  assert env["versions"]["jax"] == jax.__version__ and env["versions"]["flax"]

  for dtype in DTYPES:
    assert sections["peak"][dtype]["tflops"] > 0
  assert {c["dtype"] for c in sections["step"]["cases"]} == DTYPES
  assert {c["dtype"] for c in sections["bare"]["cases"]} == {"float32"}  # the smoke's one bare case
  for name in ("step", "bare"):
    for c in sections[name]["cases"]:
      assert c["batch"] == 8
      assert c["images_per_s"] > 0 and c["flops_per_step"] > 0 and c["compile_s"] > 0, c
      assert 0 < c["utilisation"] and math.isfinite(c["loss"]), c
      assert c["peak_memory_bytes"] is None and "cpu" in c["peak_memory_note"]  # no memory_stats() on the CPU
  # The real step does more than its backbone: the queue, the target's forward, the losses, RoIAlign.
  flops = {(n, c["dtype"]): c["flops_per_step"] for n in ("step", "bare") for c in sections[n]["cases"]}
  assert flops["step", "float32"] > flops["bare", "float32"]

  torch = sections["torch"]
  if "skipped" not in torch:
    assert {c["dtype"] for c in torch["cases"]} == DTYPES and torch["device"] == "cpu"
    assert all(c["images_per_s"] > 0 and math.isfinite(c["loss"]) for c in torch["cases"])
    assert {r["dtype"] for r in torch["ours_over_pytorch"]} == DTYPES
    assert all(r["ours_over_pytorch"] > 0 for r in torch["ours_over_pytorch"])

  pipeline = sections["host_pipeline"]
  if "skipped" not in pipeline:
    assert pipeline["pil"]["images_per_s"] > 0 and pipeline["device_augment"]["images_per_s"] > 0

  check = sections["loss_vs_cpu"]
  assert check["same_device"] is True  # JAX_PLATFORMS=cpu: the CPU against itself
  assert math.isfinite(check["loss_cpu"]) and math.isfinite(check["loss_accelerator"])
  assert check["relative_difference"] < 1e-5


def test_the_step_sections_import_without_grain_or_tensorflow_datasets():
  """An accelerator image has no grain (nor its extras), tensorflow_datasets or tensorflow: the script
  still imports, and the host pipeline section says why it is skipped."""
  script = textwrap.dedent(
    """
    import importlib.abc, sys
    class Absent(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path, target=None):
        absent = ("grain", "array_record", "cloudpickle", "portpicker", "tensorflow_datasets", "tensorflow")
        if name.split(".")[0] in absent:
          raise ImportError(f"No module named {name!r}")
    sys.meta_path.insert(0, Absent())
    sys.path.insert(0, "benchmarks")
    import accelerator_check as ac
    print(ac.host_pipeline_section(ac.SMOKE)["skipped"])
    """
  )
  done = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO_ROOT, env=cpu_env(1), capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "needs grain and ml_collections" in done.stdout and "'grain'" in done.stdout


def test_a_partial_result_is_refused_naming_what_is_missing():
  case = lambda dtype: {"batch": 8, "dtype": dtype, "images_per_s": 10.0, "loss": 1.0}
  good = {
    "environment": {"devices": []},
    "peak": {"float32": {"tflops": 1.0}, "bfloat16": {"tflops": 2.0}},
    "step": {"cases": [case("float32"), case("bfloat16")]},
    "bare": {"cases": [case("float32")]},
    "torch": {"skipped": "no Python here imports torch"},
    "host_pipeline": {"skipped": "no grain"},
    "loss_vs_cpu": {"loss_accelerator": 1.0, "loss_cpu": 1.0},
  }
  assert ac.problems(good, ac.SMOKE) == []
  bad = dict(good, peak={"skipped": "why not"}, host_pipeline={"skipped": " "})
  bad["step"] = {"cases": [case("float32"), dict(case("bfloat16"), loss=math.nan)]}
  bad["loss_vs_cpu"] = {"error": "Traceback ...\nRuntimeError: no CPU backend"}
  del bad["environment"]
  assert ac.problems(bad, ac.SMOKE) == [
    "environment: missing",
    "peak: skipped ('why not'); only torch and host_pipeline may be, with a reason",
    "host_pipeline: skipped (' '); only torch and host_pipeline may be, with a reason",
    "loss_vs_cpu: failed: RuntimeError: no CPU backend",
    "step: cases with numbers [(8, 'float32')], wanted [(8, 'bfloat16'), (8, 'float32')]",
  ]


def test_a_failing_section_leaves_the_others_and_writes_only_an_incomplete_file(tmp_path, monkeypatch, capsys):
  def broken(plan):
    raise RuntimeError("the matmul fell over")

  fake_sections(monkeypatch)
  monkeypatch.setattr(ac, "peak_section", broken)
  assert ac.main(["--smoke", "--output", str(tmp_path / "x.json")]) == 1
  assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.partial.json").exists()
  result = json.loads((tmp_path / "x.incomplete.json").read_text())
  assert "RuntimeError: the matmul fell over" in result["sections"]["peak"]["error"]
  assert result["sections"]["step"]["cases"] and result["sections"]["torch"]["skipped"]
  assert "peak: failed: RuntimeError: the matmul fell over" in capsys.readouterr().err


def fake_sections(monkeypatch):
  """Every section replaced by a quick stand-in with numbers; the cases section still honours `progress`."""

  def cases(plan, bare, peak, progress=None, earlier=()):
    case = dict(compile_s=1.0, median_step_s=8.0, images_per_s=1.0, flops_per_step=None, utilisation=None, loss=1.0)
    section = {"cases": []}
    for dtype in plan.dtypes_of(bare):
      if progress and progress.late():
        section.setdefault("not_run", []).append({"batch": 8, "dtype": dtype, "why": progress.late()})
        continue
      section["cases"].append(dict(case, batch=8, dtype=dtype, peak_memory_bytes=None))
      if progress:
        progress.save({"bare" if bare else "step": section})
    return section

  monkeypatch.setattr(ac, "find_torch_python", lambda: (None, "no Python here imports torch"))
  monkeypatch.setattr(ac, "peak_section", lambda plan: {d: {"n": 8, "tflops": 1.0} for d in plan.dtypes})
  monkeypatch.setattr(ac, "cases_section", cases)
  check = dict(accelerator="cpu", cpu="cpu", same_device=True, batch=8, relative_difference=0.0)
  loss = lambda plan, progress=None: dict(check, loss_accelerator=1.0, loss_cpu=1.0)
  monkeypatch.setattr(ac, "loss_vs_cpu_section", loss)
  monkeypatch.setattr(ac, "host_pipeline_section", lambda plan: {"skipped": "no grain"})
  monkeypatch.setattr(ac, "case_flops", lambda plan, batch_size, dtype, bare: 100.0)


def test_a_run_killed_from_outside_leaves_what_it_measured(tmp_path, monkeypatch):
  """A kill (here an interrupt in the host pipeline, after the step) leaves the partial file with the
  sections and cases done so far; no final file."""

  def killed(plan):
    raise KeyboardInterrupt

  fake_sections(monkeypatch)
  monkeypatch.setattr(ac, "host_pipeline_section", killed)
  with pytest.raises(KeyboardInterrupt):
    ac.main(["--smoke", "--output", str(tmp_path / "x.json")])
  assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.incomplete.json").exists()
  partial = json.loads((tmp_path / "x.partial.json").read_text())
  assert partial["partial"] is True
  assert list(partial["sections"]) == ["torch", "environment", "peak", "step", "loss_vs_cpu"]
  assert [c["dtype"] for c in partial["sections"]["step"]["cases"]] == ["float32", "bfloat16"]


def test_a_time_limit_starts_nothing_after_it_and_says_so(tmp_path, monkeypatch, capsys):
  fake_sections(monkeypatch)
  assert ac.main(["--smoke", "--output", str(tmp_path / "x.json"), "--time-limit-s", "0"]) == 1
  result = json.loads((tmp_path / "x.incomplete.json").read_text())
  sections = result["sections"]
  assert all("past the time limit" in sections[name]["not_run"] for name in ac.SECTIONS)
  missing = ac.problems(sections, ac.SMOKE)
  assert "torch: not run (not started: past the time limit (0 s after the start))" in missing
  assert len(missing) == len(ac.SECTIONS)
  assert "loss_vs_cpu: not run: not started" in capsys.readouterr().out


def test_a_time_limit_reached_inside_a_section_keeps_its_cases_and_lists_the_rest(tmp_path, monkeypatch):
  progress = ac.Progress(str(tmp_path / "x.partial.json"))

  def measure(plan, batch_size, dtype, bare, peak):
    progress.deadline = -math.inf  # the limit passes during the first case
    return {"batch": batch_size, "dtype": dtype, "images_per_s": 1.0, "loss": 1.0}

  monkeypatch.setattr(ac, "measure_case", measure)
  section = ac.cases_section(ac.SMOKE, False, {}, progress)
  assert section["cases"] == [{"batch": 8, "dtype": "bfloat16", "images_per_s": 1.0, "loss": 1.0}]
  assert [(c["batch"], c["dtype"]) for c in section["not_run"]] == [(8, "float32")]
  assert json.loads((tmp_path / "x.partial.json").read_text())["sections"]["step"] == section
  assert ac.problems({name: {} for name in ac.SECTIONS} | {"step": section}, ac.SMOKE)[0] == (
    "step: cases with numbers [(8, 'bfloat16')], wanted [(8, 'bfloat16'), (8, 'float32')]"
  )


def test_resume_keeps_what_has_numbers_and_runs_the_rest(tmp_path, monkeypatch, capsys):
  """An earlier run's sections with numbers are kept, its failed, skipped or unrun ones run again; a kept
  case measured before FLOPs came from the lowered program gets them (and its utilisation) anew."""
  fake_sections(monkeypatch)
  monkeypatch.setattr(ac, "cases_section", REAL_CASES_SECTION)
  measured = []

  def measure(plan, batch_size, dtype, bare, peak):
    measured.append(("bare" if bare else "step", batch_size, dtype))
    numbers = dict(compile_s=1.0, median_step_s=0.25, images_per_s=32.0, loss=2.0, peak_memory_bytes=None)
    return dict(numbers, batch=batch_size, dtype=dtype, flops_per_step=9.0, utilisation=0.1, flops_source="lowered")

  monkeypatch.setattr(ac, "measure_case", measure)
  old_case = dict(batch=8, dtype="float32", compile_s=2.0, median_step_s=0.5, images_per_s=16.0, loss=1.5)
  old_case["peak_memory_bytes"] = None
  earlier = {
    "smoke": True,
    "sections": {
      "environment": {"devices": [{"id": 0, "platform": "gpu", "device_kind": "H200"}]},
      "peak": {"float32": {"n": 256, "tflops": 1e-9}, "bfloat16": {"n": 256, "tflops": 2e-9}},
      "torch": {"skipped": "no torch there"},
      "step": {"cases": [dict(old_case, flops_per_step=5.0)]},
      "bare": {"not_run": "not started: past the time limit"},
      "loss_vs_cpu": {"error": "Traceback ...\nRuntimeError: boom"},
      "host_pipeline": {"num_workers": 16, "pil": {"images_per_s": 7.0}, "device_augment": {"images_per_s": 21.0}},
    },
  }
  (tmp_path / "earlier.json").write_text(json.dumps(earlier))
  assert ac.main(["--smoke", "--output", str(tmp_path / "x.json"), "--resume", str(tmp_path / "earlier.json")]) == 0
  result = json.loads((tmp_path / "x.json").read_text())
  sections = result["sections"]
  assert measured == [("step", 8, "bfloat16"), ("bare", 8, "float32")]
  kept = sections["step"]["cases"][1]
  assert kept["from_earlier_run"] and kept["compiled_flops_per_step"] == 5.0 and kept["flops_per_step"] == 100.0
  assert math.isclose(kept["utilisation"], 100.0 / 0.5 / (1e-9 * 1e12))  # the earlier run's peak
  assert sections["host_pipeline"]["from_earlier_run"] and sections["host_pipeline"]["pil"]["images_per_s"] == 7.0
  assert sections["loss_vs_cpu"]["loss_cpu"] == 1.0 and "from_earlier_run" not in sections["loss_vs_cpu"]
  assert sections["torch"]["skipped"] == "no Python here imports torch"  # run again, here
  assert sections["environment"]["devices"] != earlier["sections"]["environment"]["devices"]  # this machine's
  assert result["resumed_from"]["environment"] == earlier["sections"]["environment"]
  assert result["resumed_from"]["kept"] == ["host_pipeline", "peak", "step 8 float32"]
  assert "kept from earlier.json (its machine: H200): host_pipeline, peak, step 8 float32" in capsys.readouterr().out

  earlier["smoke"] = False
  (tmp_path / "earlier.json").write_text(json.dumps(earlier))
  with pytest.raises(SystemExit, match="a full run; this one is not"):
    ac.main(["--smoke", "--output", str(tmp_path / "y.json"), "--resume", str(tmp_path / "earlier.json")])


def test_fill_flops_counts_a_cases_program_on_the_host_cpu_and_rewrites_the_file(tmp_path, capsys):
  """A GPU gives no FLOPs for a lowered program: --fill-flops lowers the case's program for this host's
  CPU (the real smoke step here) and fills FLOPs, TFLOP/s and utilisation, nothing else."""
  case = dict(batch=8, dtype="float32", compile_s=2.0, median_step_s=0.5, images_per_s=16.0, loss=1.5)
  case |= dict(peak_memory_bytes=None, flops_per_step=None, tflops=None, utilisation=None, flops_note="no cost")
  run = {"smoke": True, "partial": True, "total_s": 9.0, "sections": {"peak": {"float32": {"n": 256, "tflops": 0.5}}}}
  run["sections"]["step"] = {"cases": [case]}
  (tmp_path / "run.json").write_text(json.dumps(run))
  assert ac.main(["--fill-flops", str(tmp_path / "run.json")]) == 0
  filled = json.loads((tmp_path / "run.json").read_text())
  got = filled["sections"]["step"]["cases"][0]
  expected = ac.case_flops(ac.SMOKE, 8, "float32", False)
  assert 1e8 < expected == got["flops_per_step"]  # the smoke step: about 0.24 GFLOP
  assert math.isclose(got["utilisation"], expected / 0.5 / 0.5e12) and "flops_note" not in got
  assert {k: got[k] for k in case if k not in ("flops_per_step", "tflops", "utilisation", "flops_note")} == {
    k: v for k, v in case.items() if k not in ("flops_per_step", "tflops", "utilisation", "flops_note")
  }
  assert filled["flops_filled_later"]["cases"] == ["step 8 float32"]
  out = capsys.readouterr().out
  assert "(a partial run: stopped before its end)" in out and "| ours | float32 | 8 |" in out


def test_a_loss_check_stopped_before_its_last_step_keeps_two_losses_and_is_run_again(tmp_path, monkeypatch):
  """On an accelerator the check's third step (highest precision) compiles last: a kill there leaves the
  CPU's and the default-precision losses in the partial file, marked incomplete, and --resume runs it
  again rather than keeping it."""
  progress = ac.Progress(str(tmp_path / "x.partial.json"))
  cpu = jax.devices("cpu")[0]
  monkeypatch.setattr(ac.jax, "devices", lambda *backend: [cpu] if backend else [FakeAccelerator()])
  losses = iter([2.0, 2.5])

  def build_step(config, num_classes, channels, mesh):
    return None, lambda state, batch: (None, {"loss": next(losses)})  # a third call: StopIteration

  monkeypatch.setattr(ac.step_bench, "build_step", build_step)
  monkeypatch.setattr(ac, "synthetic_batch", lambda *args, **kwargs: None)
  monkeypatch.setattr(ac, "Mesh", lambda devices, axes: None)
  with pytest.raises(StopIteration):
    ac.loss_vs_cpu_section(ac.SMOKE, progress)
  saved = json.loads((tmp_path / "x.partial.json").read_text())["sections"]["loss_vs_cpu"]
  assert (saved["loss_cpu"], saved["loss_accelerator"], saved["relative_difference"]) == (2.0, 2.5, 0.25)
  assert "highest" in saved["incomplete"] and "loss_accelerator_highest_precision" not in saved
  assert ac.problems({"loss_vs_cpu": saved}, ac.SMOKE)[0] == "environment: missing"
  assert "loss_vs_cpu: incomplete (the highest-precision step has not run yet)" in ac.problems(
    {"loss_vs_cpu": saved}, ac.SMOKE
  )
  run = {"smoke": True, "sections": {"loss_vs_cpu": saved}}
  (tmp_path / "run.json").write_text(json.dumps(run))
  assert "loss_vs_cpu" not in ac.load_earlier(str(tmp_path / "run.json"), smoke=True)


class FakeAccelerator:
  platform, device_kind, id = "gpu", "a fake GPU", 0


def test_case_flops_lowers_from_shapes_alone_to_the_program_a_built_state_lowers_to():
  """case_flops lowers the step from the state's shapes (nothing initialised): the same FLOPs as the step
  lowered with a real, initialised state, and within 3% of the compiled CPU program's own count (XLA's
  optimisations remove a little)."""
  config = ac.SMOKE.make_config(8, "float32")
  mesh = ac.device_mesh(jax.devices("cpu")[0])
  state, step = ac.step_bench.build_step(config, ac.SMOKE.num_classes, ac.SMOKE.channels, mesh)
  lowered = step.lower(state, ac.synthetic_batch(config, ac.SMOKE.num_classes, ac.SMOKE.channels, mesh))
  from_shapes = ac.case_flops(ac.SMOKE, 8, "float32", False)
  assert from_shapes == ac.step_bench.lowered_flops(lowered) > 1e8
  assert abs(ac.step_bench.compiled_flops(lowered.compile()) / from_shapes - 1) < 0.03
