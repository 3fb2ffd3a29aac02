"""Our jitted step against a PyTorch implementation of the same step, on the same CPU, side by side.

  python benchmarks/vs_pytorch.py                              # every case, 3 alternating pairs
  python benchmarks/vs_pytorch.py --cases resnet20_dscl_pbsd --pairs 5 --repeats 5

For each case and pair the three sides run one after another, each in a fresh process: ours
(`benchmarks/step.py`), the PyTorch step (`benchmarks/torch_reference_step.py` under `/usr/bin/python3`
with Debian's torch / torchvision: a reimplementation of the reference step from METHODS.md, eager
PyTorch, `--threads` intra-op threads), and our bare backbone (`benchmarks/step.py --bare`: the same
convolutions, no loss, no queue). Each side reports the median of `--repeats` timed steps; the table
gives the median over pairs of images/s and of the per-pair ratios (a pair's sides ran within a minute
of each other, so load changes on a shared machine affect both). Writes
`benchmarks/results/vs_pytorch.json`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
# case: (benchmarks/step.py case, torch_reference_step.py case, global batch)
CASES = {
  "resnet20_dscl_pbsd": ("fashion_dscl_pbsd", "fashion_dscl_pbsd", 256),
  "resnet50_dscl_pbsd": ("resnet50_dscl_pbsd", "resnet50_dscl_pbsd", 32),
  "fashion_paco": ("fashion_paco", "fashion_paco", 128),
  "fashion_ce": ("fashion_ce", "fashion_ce", 128),
}
DESCRIPTIONS = {
  "resnet20_dscl_pbsd": "ResNet-20, 28x28x1, batch 256, K 4096, 5 crops of 12x12",
  "resnet50_dscl_pbsd": "ResNet-50, 224x224x3, batch 32, K 65536, 5 crops of 64x64",
  "fashion_paco": "PaCo, ResNet-20, 28x28x1, batch 128, K 4096",
  "fashion_ce": "cross-entropy, ResNet-20, 28x28x1, batch 128",
}


def run_side(side: str, case: str, repeats: int, threads: int) -> dict:
  ours, theirs, batch = CASES[case]
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    if side == "pytorch":
      command = [
        SYSTEM_PYTHON,
        str(HERE / "torch_reference_step.py"),
        "--case",
        theirs,
        "--batch",
        str(batch),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
        "--out",
        out,
      ]
    else:
      command = [
        sys.executable,
        str(HERE / "step.py"),
        "--cases",
        ours,
        "--batch",
        str(batch),
        "--repeats",
        str(repeats),
        "--out",
        out,
        "--quiet",
      ] + (["--bare"] if side == "bare" else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(f"{side} side of {case} failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    result = json.loads(Path(out).read_text())
  return result[0] if isinstance(result, list) else result


def check_pytorch() -> None:
  probe = subprocess.run([SYSTEM_PYTHON, "-c", "import torch, torchvision"], capture_output=True, text=True)
  if probe.returncode:
    sys.exit(
      f"error: {SYSTEM_PYTHON} cannot import torch and torchvision (Debian: apt-get install python3-torch "
      f"python3-torchvision): {probe.stderr.strip()[-300:]}"
    )


def summarise(case: str, pairs: list[dict]) -> dict:
  """Medians over pairs: images/s of each side, ours / PyTorch speed-up, ours / bare step-time cost."""
  speed = {side: statistics.median(p[side]["images_per_s"] for p in pairs) for side in ("ours", "pytorch", "bare")}
  return {
    "case": case,
    "description": DESCRIPTIONS[case],
    "batch": CASES[case][2],
    "pairs": len(pairs),
    "images_per_s": speed,
    "speedup_vs_pytorch": statistics.median(p["ours"]["images_per_s"] / p["pytorch"]["images_per_s"] for p in pairs),
    "cost_vs_bare": statistics.median(p["ours"]["median_step_s"] / p["bare"]["median_step_s"] for p in pairs),
    "runs": pairs,
  }


def table(summaries: list[dict]) -> str:
  lines = [
    "| case | ours img/s | PyTorch img/s | ours / PyTorch | bare backbone img/s | ours / bare (step time) |",
    "|---|---|---|---|---|---|",
  ]
  for s in summaries:
    v = s["images_per_s"]
    lines.append(
      f"| {s['description']} | {v['ours']:.2f} | {v['pytorch']:.2f} | {s['speedup_vs_pytorch']:.2f}x | "
      f"{v['bare']:.2f} | {s['cost_vs_bare']:.2f}x |"
    )
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
  parser.add_argument("--pairs", type=int, default=3, help="alternating rounds of (ours, PyTorch, bare)")
  parser.add_argument("--repeats", type=int, default=3, help="timed steps per side and round")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch's threads")
  parser.add_argument("--out", default=str(HERE / "results" / "vs_pytorch.json"))
  args = parser.parse_args(argv)
  check_pytorch()
  summaries = []
  for case in args.cases:
    pairs = []
    for i in range(args.pairs):
      pair = {}
      for side in ("ours", "pytorch", "bare"):
        pair[side] = run_side(side, case, args.repeats, args.threads)
        print(
          f"[vs_pytorch] {case} round {i + 1}/{args.pairs}: {side} {pair[side]['images_per_s']:.2f} img/s "
          f"(median of {args.repeats} steps, load {os.getloadavg()[0]:.1f})",
          flush=True,
        )
      pairs.append(pair)
    summaries.append(summarise(case, pairs))
  text = table(summaries)
  print(text)
  result = {
    "date": datetime.date.today().isoformat(),
    "machine": {
      "platform": platform.platform(),
      "processor": platform.processor() or platform.machine(),
      "cpus": len(os.sched_getaffinity(0)),
      "pytorch_threads": args.threads,
    },
    "table": text,
    "cases": summaries,
  }
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps(result, indent=1))
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
