"""torchvision reference for benchmarks/input_pipeline.py: the DSCL + PBSD views with a DataLoader.

Run only by `/usr/bin/python3` (torch 1.13 / torchvision 0.14), never imported by the package:

    /usr/bin/python3 benchmarks/torch_input_pipeline.py --root <dir> --split_list <file> --num_workers 2

Same recipe as dscl_jax.input.augment.pretrain_views, done the torchvision way on PIL images: two
RandomResizedCrop(224, (0.08, 1)) + flip global crops; five RandomResizedCrop((0.05, 0.6)) boxes drawn in
the (flipped) query crop and resized to 64; query colours (jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale p 0.2,
blur sigma 0.1-2 p 0.5) on the query and every small crop, key colours (jitter 0.4/0.4/0.4/0 always) on
the key; ToTensor + ImageNet normalisation. The blur is the reference's (MoCo v2's): PIL's
`ImageFilter.GaussianBlur(radius=sigma)`, as in dscl_jax.input.augment. Prints one JSON line: images/s over
the timed batches (and from the median batch interval).
"""

import argparse
import json
import os
import random
import statistics
import time

import torch
from PIL import Image, ImageFilter
from torch.utils import data
from torchvision import transforms
from torchvision.transforms import functional as F

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PilGaussianBlur:
  """Blur with sigma uniform in `sigma_range`, by PIL's GaussianBlur (the reference's blur)."""

  def __init__(self, sigma_range=(0.1, 2.0)):
    self.sigma_range = sigma_range

  def __call__(self, image):
    return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma_range)))


def query_colours():
  return transforms.Compose(
    [
      transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
      transforms.RandomGrayscale(p=0.2),
      transforms.RandomApply([PilGaussianBlur((0.1, 2.0))], p=0.5),
      transforms.ToTensor(),
      transforms.Normalize(MEAN, STD),
    ]
  )


class PretrainViews(data.Dataset):
  """Split list -> (query [3, S, S], key [3, S, S], small_crops [n, 3, s, s], boxes [n, 4], label)."""

  def __init__(self, root, split_list, image_size=224, num_crops=5, crop_size=64):
    with open(split_list) as f:
      self.samples = [(os.path.join(root, path), int(label)) for path, label in (l.split() for l in f)]
    self.global_crop = transforms.Compose(
      [
        transforms.RandomResizedCrop(image_size, scale=(0.08, 1.0)),
        transforms.RandomHorizontalFlip(),
      ]
    )
    self.query_colours = query_colours()
    self.key_colours = transforms.Compose(
      [
        transforms.ColorJitter(0.4, 0.4, 0.4, 0.0),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
      ]
    )
    self.num_crops, self.crop_size = num_crops, crop_size

  def __len__(self):
    return len(self.samples)

  def __getitem__(self, index):
    path, label = self.samples[index]
    with Image.open(path) as image:
      image = image.convert("RGB")
    query_crop = self.global_crop(image)
    key_crop = self.global_crop(image)
    small_crops, boxes = [], []
    for _ in range(self.num_crops):
      top, left, height, width = transforms.RandomResizedCrop.get_params(
        query_crop, scale=(0.05, 0.6), ratio=(3 / 4, 4 / 3)
      )
      small = F.resized_crop(query_crop, top, left, height, width, [self.crop_size, self.crop_size])
      small_crops.append(self.query_colours(small))
      boxes.append(torch.tensor([left, top, left + width, top + height], dtype=torch.float32))
    return (
      self.query_colours(query_crop),
      self.key_colours(key_crop),
      torch.stack(small_crops),
      torch.stack(boxes),
      label,
    )


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--root", required=True)
  parser.add_argument("--split_list", required=True)
  parser.add_argument("--num_workers", type=int, default=1)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--warmup", type=int, default=4)
  parser.add_argument("--batches", type=int, default=16)
  args = parser.parse_args()
  dataset = PretrainViews(args.root, args.split_list)
  total = args.batch_size * (args.warmup + args.batches)
  # Sampling with replacement: one endless stream, so no epoch boundary falls in the timed window.
  sampler = data.RandomSampler(dataset, replacement=True, num_samples=total, generator=torch.Generator().manual_seed(0))
  loader = data.DataLoader(
    dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers, drop_last=True
  )
  intervals = []
  iterator = iter(loader)
  for _ in range(args.warmup):
    next(iterator)
  last = time.perf_counter()
  for _ in range(args.batches):
    batch = next(iterator)
    now = time.perf_counter()
    intervals.append(now - last)
    last = now
  assert batch[0].shape == (args.batch_size, 3, 224, 224) and batch[2].shape == (args.batch_size, 5, 3, 64, 64)
  print(
    json.dumps(
      {
        "num_workers": args.num_workers,
        "batch_size": args.batch_size,
        "images_per_s": args.batch_size * len(intervals) / sum(intervals),
        "images_per_s_median_interval": args.batch_size / statistics.median(intervals),
        "batch_seconds": intervals,
      }
    )
  )


if __name__ == "__main__":
  main()
