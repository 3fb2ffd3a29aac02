"""Where the ResNet-20 step's time goes on a CPU: every 3x3 convolution shape of the Fashion-MNIST
ResNet-20 at batch 256, forward, input gradient (dx) and weight gradient (dw), XLA:CPU against PyTorch.

  python benchmarks/conv_layers.py              # table + benchmarks/results/conv_layers.json
  python benchmarks/conv_layers.py --repeats 10

Our side times each piece as its own jitted function (`jax.vjp` of `lax.conv_general_dilated`, NHWC /
HWIO, as flax.linen.Conv lowers). The PyTorch side (Debian torch 1.13 under /usr/bin/python3, 2 threads,
NCHW, run by this same file with `--torch`) times the forward and `autograd.grad` for dx and dw together,
since PyTorch computes them in one backward call. "layers" is how many convolutions of that shape a
ResNet-20 forward has, so the weighted sums estimate the backbone's whole convolution time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (input side, in channels, out channels, stride, convolutions of this shape in a ResNet-20 forward)
SHAPES = [
  (28, 1, 16, 1, 1),
  (28, 16, 16, 1, 6),
  (28, 16, 32, 2, 1),
  (14, 32, 32, 1, 5),
  (14, 32, 64, 2, 1),
  (7, 64, 64, 1, 5),
]
BATCH = 256
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "conv_layers.json")


def median_ms(fn, repeats):
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def time_torch(repeats):
  import numpy as np
  import torch
  import torch.nn.functional as F

  torch.set_num_threads(2)
  rng = np.random.default_rng(0)
  rows = []
  for side, cin, cout, stride, _ in SHAPES:
    x = torch.from_numpy(rng.normal(size=(BATCH, cin, side, side)).astype(np.float32)).requires_grad_()
    w = torch.from_numpy(rng.normal(size=(cout, cin, 3, 3)).astype(np.float32)).requires_grad_()
    conv = lambda: F.conv2d(x, w, stride=stride, padding=1)
    g = torch.ones_like(conv())
    with torch.no_grad():
      forward = median_ms(conv, repeats)
    both = median_ms(lambda: torch.autograd.grad(conv(), (x, w), g), repeats) - forward
    rows.append({"forward_ms": forward, "backward_ms": both})
  return rows


def time_xla(repeats):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax import lax

  rng = np.random.default_rng(0)
  rows = []
  for side, cin, cout, stride, _ in SHAPES:
    x = jnp.asarray(rng.normal(size=(BATCH, side, side, cin)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cout)).astype(np.float32))
    conv = lambda x, w: lax.conv_general_dilated(
      x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    g = jnp.ones_like(conv(x, w))
    fwd = jax.jit(conv)
    dx = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(conv, x, w)[1](g)[1])
    rows.append(
      {
        "forward_ms": median_ms(lambda: fwd(x, w).block_until_ready(), repeats),
        "dx_ms": median_ms(lambda: dx(x, w, g).block_until_ready(), repeats),
        "dw_ms": median_ms(lambda: dw(x, w, g).block_until_ready(), repeats),
      }
    )
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)  # the PyTorch side, JSON out
  args = parser.parse_args()
  if args.torch:
    print(json.dumps(time_torch(args.repeats)))
    return
  ours = time_xla(args.repeats)
  try:
    out = subprocess.run(
      ["/usr/bin/python3", os.path.abspath(__file__), "--torch", "--repeats", str(args.repeats)],
      check=True,
      capture_output=True,
      text=True,
    ).stdout
    theirs = json.loads(out.strip().splitlines()[-1])
  except (OSError, subprocess.CalledProcessError) as error:
    print(f"PyTorch side unavailable ({error}); install python3-torch for the comparison", file=sys.stderr)
    theirs = [None] * len(SHAPES)
  print(
    f"3x3 convolutions of a ResNet-20 at batch {BATCH}, median ms of {args.repeats} "
    f"(XLA:CPU jax {__import__('jax').__version__} against PyTorch, 2 threads)"
  )
  print("| input | layers | XLA fwd | XLA dx | XLA dw | PyTorch fwd | PyTorch dx + dw | XLA / PyTorch |")
  print("|---|---|---|---|---|---|---|---|")
  totals = {"xla_forward": 0.0, "xla_dx": 0.0, "xla_dw": 0.0, "torch_forward": 0.0, "torch_backward": 0.0}
  rows = []
  for (side, cin, cout, stride, layers), mine, other in zip(SHAPES, ours, theirs):
    xla = mine["forward_ms"] + mine["dx_ms"] + mine["dw_ms"]
    totals["xla_forward"] += layers * mine["forward_ms"]
    totals["xla_dx"] += layers * mine["dx_ms"]
    totals["xla_dw"] += layers * mine["dw_ms"]
    ratio = "n/a"
    if other is not None:
      totals["torch_forward"] += layers * other["forward_ms"]
      totals["torch_backward"] += layers * other["backward_ms"]
      ratio = f"{xla / (other['forward_ms'] + other['backward_ms']):.2f}x"
    torch_cells = f"{other['forward_ms']:.1f} | {other['backward_ms']:.1f}" if other is not None else "n/a | n/a"
    print(
      f"| {side}x{side}x{cin} -> {cout}, stride {stride} | {layers} | {mine['forward_ms']:.1f} | "
      f"{mine['dx_ms']:.1f} | {mine['dw_ms']:.1f} | {torch_cells} | {ratio} |"
    )
    rows.append({"side": side, "in": cin, "out": cout, "stride": stride, "layers": layers, "xla": mine, "torch": other})
  xla_total = totals["xla_forward"] + totals["xla_dx"] + totals["xla_dw"]
  print(
    f"ResNet-20 forward + backward, 3x3 convolutions only: XLA {xla_total:.0f} ms "
    f"(forward {totals['xla_forward']:.0f}, dx {totals['xla_dx']:.0f}, dw {totals['xla_dw']:.0f})",
    end="",
  )
  if theirs[0] is not None:
    torch_total = totals["torch_forward"] + totals["torch_backward"]
    print(f", PyTorch {torch_total:.0f} ms: {xla_total / torch_total:.2f}x")
  else:
    print()
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w") as f:
    json.dump(
      {
        "batch": BATCH,
        "repeats": args.repeats,
        "rows": rows,
        "totals_ms": totals,
        "date": time.strftime("%Y-%m-%d"),
        "machine": os.uname().machine,
        "cpus": os.cpu_count(),
      },
      f,
      indent=1,
    )
  print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main()
