"""The PyTorch side of the step-speed comparison: one eager PyTorch training step per case, timed.

  /usr/bin/python3 benchmarks/torch_reference_step.py --case fashion_dscl_pbsd --repeats 5 --threads 2 \
      --out /tmp/torch_fashion_dscl_pbsd.json

Written from the equations of ../shared/docs/METHODS.md (sections 1 MoCo state, 2 DSCL, 3 PBSD, 5 PaCo)
and from what dscl_jax computes (dscl_jax/core/step.py, methods/, losses/, models/), not from the reference
code. It runs under the system Python (Debian's torch / torchvision, numpy): standard library, numpy,
torch and torchvision only, no jax or dscl_jax.

One step, as in dscl_jax/core/step.py and the MoCo-style reference:
  1. EMA of the key encoder towards the online encoder (theta_k <- m theta_k + (1 - m) theta_q), done
     before the keys as the reference does; then the keys: the key encoder in train mode, no gradient, on
     a randomly permuted batch cut into groups of `key_bn_group` images, one forward call per group (each
     group's BatchNorm statistics are its own: shuffle-BN), un-permuted and L2-normalised.
  2. the online encoder on the query view (with gradient) and, with PBSD, on each crop's batch, one call
     per crop; PBSD's teacher is RoIAlign (2x2, sampling_ratio -1, aligned False) of the crops' boxes on the
     online query's last feature map, bins averaged, through the projection head, normalised, no gradient.
  3. the loss, backward, SGD (momentum 0.9, weight decay 5e-4 added to the gradient, every parameter).
  4. the keys and labels written into the [K, D] ring buffer at the pointer (pointer += B mod K).
Inputs are random tensors of the real shapes drawn once (seeded); the timing drops the first step.

`--device cuda` runs it on a GPU (cuDNN autotuning on: the shapes never change), `--dtype bfloat16` runs
the encoders under autocast (the losses, the queue and the parameters stay float32, as dscl_jax's
`model.dtype`), `--channels-last` stores the encoders and the image views NHWC. The defaults (cpu,
float32, NCHW) are the step described above, unchanged.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Each case mirrors our config: dscl_jax/config/schema.py fashion_mnist_lt_config (batch 128, K 4096,
# m 0.99, key BatchNorm groups of 64), paco_recipe (alpha 0.05, T 0.2, beta = gamma = 1), and
# benchmarks/step.py's resnet50 case (imagenet recipe at batch 32, key BatchNorm groups of 16).
_FASHION = dict(
  style="cifar",
  depth=20,
  channels=1,
  image_size=28,
  batch=128,
  queue=4096,
  classes=10,
  ema=0.99,
  key_bn_group=64,
  crops=0,
  crop_size=12,
  method="dscl",
  head="mlp",
  lr=0.05,
  temperature=0.07,
)
CASES = {
  "fashion_dscl": dict(_FASHION),
  "fashion_dscl_pbsd": dict(_FASHION, crops=5),
  "fashion_paco": dict(_FASHION, method="paco", head="mlp_bn", temperature=0.2, lr=0.02),
  "fashion_ce": dict(_FASHION, method="ce", head=None, queue=0, key_bn_group=0, ema=0.0),
  # benchmarks/accelerator_check.py --smoke: its smoke_config, the same code at tiny shapes.
  "smoke_dscl_pbsd": dict(
    _FASHION, depth=8, channels=3, image_size=16, batch=8, queue=256, key_bn_group=4, crops=2, crop_size=8
  ),
  "resnet50_dscl_pbsd": dict(
    style="imagenet",
    depth=50,
    channels=3,
    image_size=224,
    batch=32,
    queue=65536,
    classes=1000,
    ema=0.999,
    key_bn_group=16,
    crops=5,
    crop_size=64,
    method="dscl",
    head="mlp",
    lr=0.0125,
    temperature=0.07,
  ),
}
EMBED_DIM = 128
DSCL_BETA = 8.0  # config schema: loss.beta
PBSD_WEIGHT = 1.5  # augment.default_pbsd_config: weight
PBSD_CROP_SCALE = (0.05, 0.6)  # augment.default_pbsd_config: crop_scale
PACO_ALPHA, PACO_BETA, PACO_GAMMA, PACO_SUP_T = 0.05, 1.0, 1.0, 1.0
LOG_EPSILON, PRIOR_EPSILON = 1e-12, 1e-9


# ------------------------------------------------------------------------------------------------ models
class BasicBlock(nn.Module):
  """Two 3x3 convolutions; a strided 1x1 conv + BN shortcut where the shape changes; last BN scale 0."""

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    nn.init.zeros_(self.bn2.weight)  # zero_init_residual (config schema: model.zero_init_residual = True)
    self.shortcut = nn.Identity()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(self.shortcut(x) + y)


def cifar_resnet(depth, channels):
  """CIFAR ResNet (depth 6n + 2): 3x3 stem, 3 stages of n basic blocks, widths 16/32/64, stride 4 in all.
  [B, C, H, W] -> [B, 64, H/4, W/4]."""
  n = (depth - 2) // 6
  layers = [nn.Conv2d(channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
  cin = 16
  for stage, width in enumerate((16, 32, 64)):
    for block in range(n):
      layers.append(BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
      cin = width
  trunk = nn.Sequential(*layers)
  for m in trunk.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
  return trunk, 64


def imagenet_resnet50(channels):
  """torchvision's ResNet-50 (v1.5, zero_init_residual) without avgpool / fc: [B, 3, H, W] -> [B, 2048,
  H/32, W/32]."""
  assert channels == 3
  m = torchvision.models.resnet50(zero_init_residual=True)
  return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4), 2048


class Encoder(nn.Module):
  """Trunk + projection head (heads.py: "mlp" Linear(F, F) -> ReLU -> Linear(F, D); "mlp_bn" with a
  BatchNorm1d after the hidden layer; None: no head) + optional linear classifier on the pooled feature.
  forward(x [B, C, H, W]) -> {"feature_map" [B, F, h, w], "pooled" [B, F], "embedding" [B, D] (not
  normalised), "logits" [B, classes]}."""

  def __init__(self, case):
    super().__init__()
    if case["style"] == "cifar":
      self.trunk, features = cifar_resnet(case["depth"], case["channels"])
    else:
      self.trunk, features = imagenet_resnet50(case["channels"])
    self.head = None
    if case["head"] is not None:
      hidden = [nn.Linear(features, features)]
      if case["head"] == "mlp_bn":
        hidden.append(nn.BatchNorm1d(features))
      self.head = nn.Sequential(*hidden, nn.ReLU(inplace=True), nn.Linear(features, EMBED_DIM))
    self.classifier = nn.Linear(features, case["classes"]) if case["method"] in ("ce", "paco") else None

  def forward(self, x):
    fmap = self.trunk(x)
    out = {"feature_map": fmap, "pooled": fmap.mean(dim=(2, 3))}
    if self.head is not None:
      out["embedding"] = self.head(out["pooled"])
    if self.classifier is not None:
      out["logits"] = self.classifier(out["pooled"])
    return out


# ------------------------------------------------------------------------------------------------ losses
def dscl_loss(q, k, queue, labels, queue_labels, beta=DSCL_BETA, temperature=0.07):
  """METHODS.md section 2. q, k [B, D] normalised, queue [K, D], labels [B], queue_labels [K] -> scalar.
  Row max (self column included) subtracted, self column excluded from the denominator, 1e-12 in the log;
  weight 1 on the own key k_i and beta / |P_i| on the other same-class candidates, over 1 + beta."""
  b = q.shape[0]
  cand = torch.cat([q, k, queue], 0)  # [2B+K, D]
  cand_labels = torch.cat([labels, labels, queue_labels], 0)  # [2B+K]
  logits = q @ cand.t() / temperature  # [B, 2B+K]
  logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
  rows = torch.arange(b, device=q.device)
  is_self = torch.zeros_like(logits, dtype=torch.bool)
  is_self[rows, rows] = True
  exp = torch.exp(logits).masked_fill(is_self, 0.0)
  log_prob = logits - torch.log(exp.sum(1, keepdim=True) + LOG_EPSILON)  # [B, 2B+K]
  positive = (labels[:, None] == cand_labels[None, :]) & ~is_self
  positive[rows, b + rows] = False  # P_i: own key excluded
  num_others = positive.sum(1)
  others_mean = (log_prob * positive).sum(1) / num_others.clamp(min=1)
  total_weight = 1.0 + beta * (num_others > 0).float()
  return -((log_prob[rows, b + rows] + beta * others_mean) / total_weight).mean()


def pbsd_loss(teacher, student, k, queue, temperature=0.07):
  """METHODS.md section 3. teacher, student [n, B, D] normalised (teacher without gradient), k [B, D],
  queue [K, D]: mean over crops and anchors of H(softmax(t), log_softmax(s)) over [own key, queue]."""
  total = 0.0
  for t, s in zip(teacher, student):  # one crop at a time: [B, 1+K] temporaries

    def logits(z):
      return torch.cat([(z * k).sum(1, keepdim=True), z @ queue.t()], 1) / temperature

    with torch.no_grad():
      target = F.softmax(logits(t), dim=1)
    total = total - (target * F.log_softmax(logits(s), dim=1)).sum(1).mean()
  return total / teacher.shape[0]


def paco_loss(q, k, queue, labels, queue_labels, class_logits, log_prior, temperature):
  """METHODS.md section 5 (PaCo, the B queries as anchors). class_logits [B, C], log_prior [C] = log(pi +
  1e-9). One row max over the class and feature columns together (self included), 1e-12 inside log D_i."""
  b = q.shape[0]
  cand = torch.cat([q, k, queue], 0)  # [2B+K, D]
  cand_labels = torch.cat([labels, labels, queue_labels], 0)
  contrast = q @ cand.t() / temperature  # [B, 2B+K]
  scores = (class_logits + log_prior) / PACO_SUP_T  # [B, C]
  row_max = torch.maximum(scores.max(1, keepdim=True)[0], contrast.max(1, keepdim=True)[0]).detach()
  scores, contrast = scores - row_max, contrast - row_max
  rows = torch.arange(b, device=q.device)
  is_self = torch.zeros_like(contrast, dtype=torch.bool)
  is_self[rows, rows] = True
  contrast_exp = torch.exp(contrast).masked_fill(is_self, 0.0)
  log_d = torch.log(
    torch.exp(scores).sum(1, keepdim=True) + PACO_GAMMA * contrast_exp.sum(1, keepdim=True) + LOG_EPSILON
  )  # [B, 1]
  class_term = scores.gather(1, labels[:, None])[:, 0] - log_d[:, 0]
  positive = (labels[:, None] == cand_labels[None, :]) & ~is_self
  contrast_term = ((contrast - log_d) * positive).sum(1)
  normaliser = PACO_BETA + PACO_ALPHA * positive.sum(1)
  return -((PACO_BETA * class_term + PACO_ALPHA * contrast_term) / normaliser).mean()


# -------------------------------------------------------------------------------------------------- step
class Trainer:
  """The online encoder, its EMA key encoder, SGD and the queue; `step()` runs one training step."""

  def __init__(self, case, batch, device="cpu", dtype="float32", channels_last=False):
    self.case, self.batch, self.device = case, batch, torch.device(device)
    # Autocast runs the encoders' convolutions and matmuls in bfloat16; `encode` casts their outputs back.
    self.autocast = lambda: torch.autocast(self.device.type, torch.bfloat16, enabled=dtype == "bfloat16")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    self.online = Encoder(case).train().to(self.device, memory_format=memory_format)
    self.optimizer = torch.optim.SGD(self.online.parameters(), lr=case["lr"], momentum=0.9, weight_decay=5e-4)
    self.uses_key = case["method"] != "ce"
    if self.uses_key:
      self.key_encoder = Encoder(case).train().to(self.device, memory_format=memory_format)
      self.key_encoder.load_state_dict(self.online.state_dict())
      for p in self.key_encoder.parameters():
        p.requires_grad_(False)
      self.queue = F.normalize(torch.randn(case["queue"], EMBED_DIM), dim=1)  # [K, D]
      self.queue_labels = torch.randint(0, case["classes"], (case["queue"],))  # [K]
      self.queue, self.queue_labels = self.queue.to(self.device), self.queue_labels.to(self.device)
      self.ptr = 0
    if case["method"] == "paco":  # a long-tailed prior, as benchmarks/step.py
      counts = np.geomspace(1000, 10, case["classes"]).round()
      self.log_prior = torch.log(torch.from_numpy(counts / counts.sum()).float() + PRIOR_EPSILON).to(self.device)

  def encode(self, model, x):
    """`model(x)` under the step's autocast, its outputs float32 (no copy when they already are)."""
    with self.autocast():
      out = model(x)
    return {name: value.float() for name, value in out.items()}

  @torch.no_grad()
  def keys(self, images):
    """[B, C, H, W] -> [B, D] normalised keys: EMA step, then groups of a permuted batch (shuffle-BN)."""
    m = self.case["ema"]
    for pk, pq in zip(self.key_encoder.parameters(), self.online.parameters()):
      pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)
    perm = torch.randperm(images.shape[0]).to(images.device)
    group = self.case["key_bn_group"] or images.shape[0]
    emb = torch.cat([self.encode(self.key_encoder, chunk)["embedding"] for chunk in images[perm].split(group)])
    keys = torch.empty_like(emb)
    keys[perm] = F.normalize(emb, dim=1)
    return keys

  def step(self):
    batch, case = self.batch, self.case
    labels = batch["label"]
    k = self.keys(batch["key"]) if self.uses_key else None
    out = self.encode(self.online, batch["query"])
    if case["method"] == "ce":
      loss = F.cross_entropy(out["logits"], labels)
    elif case["method"] == "paco":
      loss = paco_loss(
        F.normalize(out["embedding"], dim=1),
        k,
        self.queue,
        labels,
        self.queue_labels,
        out["logits"],
        self.log_prior,
        case["temperature"],
      )
    else:
      loss = dscl_loss(
        F.normalize(out["embedding"], dim=1), k, self.queue, labels, self.queue_labels, temperature=case["temperature"]
      )
      if case["crops"]:
        crops = batch["crops"]  # [n, B, C, s, s]
        embed = lambda crop: F.normalize(self.encode(self.online, crop)["embedding"], dim=1)  # [B, D]
        student = torch.stack([embed(crop) for crop in crops])  # [n, B, D]
        fmap = out["feature_map"].detach()  # [B, F, h, w]
        with torch.no_grad():
          pooled = torchvision.ops.roi_align(
            fmap,
            batch["rois"],
            output_size=(2, 2),
            spatial_scale=fmap.shape[-1] / batch["query"].shape[-1],
            sampling_ratio=-1,
            aligned=False,
          )  # [n*B, F, 2, 2]
          with self.autocast():
            teacher = self.online.head(pooled.mean(dim=(2, 3)))
          teacher = F.normalize(teacher.float(), dim=1)
        teacher = teacher.view(crops.shape[0], labels.shape[0], -1)  # [n, B, D]
        loss = loss + PBSD_WEIGHT * pbsd_loss(teacher, student, k, self.queue, case["temperature"])
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    if self.uses_key and case["queue"]:
      b = labels.shape[0]
      self.queue[self.ptr : self.ptr + b] = k
      self.queue_labels[self.ptr : self.ptr + b] = labels
      self.ptr = (self.ptr + b) % case["queue"]
    return float(loss.detach())


def make_batch(case, seed=0):
  """Random inputs of the case's shapes: "query", "key" [B, C, S, S], "label" [B]; with crops, "crops"
  [n, B, C, s, s] and "rois" [n*B, 5] (batch index, x1, y1, x2, y2 in query pixels, crop-major), the
  boxes drawn as dscl_jax/input/synthetic.py does (square, area fraction in PBSD's crop scale)."""
  rng = np.random.default_rng(seed)
  b, s, c = case["batch"], case["image_size"], case["channels"]
  normal = lambda *shape: torch.from_numpy(rng.normal(size=shape).astype(np.float32))
  batch = {
    "query": normal(b, c, s, s),
    "key": normal(b, c, s, s),
    "label": torch.from_numpy(rng.integers(0, case["classes"], size=b).astype(np.int64)),
  }
  n = case["crops"]
  if n:
    cs = case["crop_size"]
    batch["crops"] = normal(n, b, c, cs, cs)
    side = np.sqrt(rng.uniform(*PBSD_CROP_SCALE, size=(n, b, 1))) * s
    xy = rng.uniform(0, 1, size=(n, b, 2)) * (s - side)
    index = np.broadcast_to(np.arange(b, dtype=np.float64)[None, :, None], (n, b, 1))
    rois = np.concatenate([index, xy, xy + side], axis=-1).reshape(n * b, 5)
    batch["rois"] = torch.from_numpy(rois.astype(np.float32))
  return batch


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--case", required=True, choices=sorted(CASES))
  parser.add_argument("--repeats", type=int, default=5, help="timed steps (one more is run and dropped)")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--batch", type=int, default=0, help="override the case's batch (0: the case's)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="", help="JSON result file (empty: none)")
  parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
  parser.add_argument("--channels-last", action="store_true", help="NHWC encoders and image views")
  parser.add_argument("--check-decreases", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  case = dict(CASES[args.case])
  if args.batch:
    case["batch"] = args.batch
  if case["queue"] % case["batch"] or (case["key_bn_group"] and case["batch"] % case["key_bn_group"]):
    sys.exit(
      f"queue {case['queue']} must be a multiple of the batch {case['batch']}, and the batch of the "
      f"key BatchNorm group {case['key_bn_group']}"
    )
  device = torch.device(args.device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True  # fixed shapes: pick each convolution's fastest algorithm once
  batch = {name: value.to(device) for name, value in make_batch(case, args.seed).items()}
  if args.channels_last:
    for name in ("query", "key"):
      batch[name] = batch[name].contiguous(memory_format=torch.channels_last)
  trainer = Trainer(case, batch, device, args.dtype, args.channels_last)

  if args.check_decreases:  # hidden: losses on the fixed batch must be finite and go down
    losses = [trainer.step() for _ in range(args.check_decreases)]
    print(f"{args.case} losses: " + " ".join(f"{x:.4f}" for x in losses))
    ok = all(np.isfinite(losses)) and losses[-1] < losses[0]
    print("decreases: OK" if ok else "decreases: FAILED")
    sys.exit(0 if ok else 1)

  times, loss = [], float("nan")
  for i in range(args.repeats + 1):
    start = time.perf_counter()
    loss = trainer.step()
    if device.type == "cuda":  # `float(loss)` in `step` waits too; explicit, so the timing never relies on it
      torch.cuda.synchronize(device)
    if i:  # the first step also allocates and warms caches
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  result = {
    "case": args.case,
    "batch": case["batch"],
    "image_size": case["image_size"],
    "queue": case["queue"],
    "crops": case["crops"],
    "threads": args.threads,
    "median_step_s": median,
    "min_step_s": min(times),
    "images_per_s": case["batch"] / median,
    "repeats": args.repeats,
    "torch_version": torch.__version__,
    "loss": loss,
    "step_times_s": times,
    "key_bn_group": case["key_bn_group"],
    "ema": case["ema"],
    "load_average": os.getloadavg(),
    "device": str(device),
    "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    "dtype": args.dtype,
    "channels_last": args.channels_last,
    "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
  }
  print(
    f"{args.case}: batch {case['batch']} threads {args.threads} median {median:.3f} s/step "
    f"(min {min(times):.3f}) {result['images_per_s']:.1f} img/s loss {loss:.4f} torch {torch.__version__}"
  )
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
