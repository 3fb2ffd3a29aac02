"""torchvision.ops.roi_align on cases stored as .npy files (run by /usr/bin/python3).

Usage: /usr/bin/python3 torch_roi_align_ref.py CASE_DIR

CASE_DIR/cases.json lists cases {"name", "output_size", "spatial_scale",
"sampling_ratio", "aligned"}; for each name the directory holds
NAME_features.npy [N, H, W, C], NAME_boxes.npy [R, 4] and
NAME_box_indices.npy [R]. Writes NAME_out.npy [R, out_h, out_w, C].
"""

import json
import os
import sys

import numpy as np
import torch
import torchvision


def main(case_dir):
  with open(os.path.join(case_dir, "cases.json")) as f:
    cases = json.load(f)
  for case in cases:
    prefix = os.path.join(case_dir, case["name"])
    features = np.load(prefix + "_features.npy")
    boxes = np.load(prefix + "_boxes.npy")
    box_indices = np.load(prefix + "_box_indices.npy")
    rois = np.concatenate([box_indices[:, None].astype(boxes.dtype), boxes], axis=1)
    out = torchvision.ops.roi_align(
      torch.from_numpy(np.ascontiguousarray(features.transpose(0, 3, 1, 2))),
      torch.from_numpy(rois),
      output_size=tuple(case["output_size"]),
      spatial_scale=case["spatial_scale"],
      sampling_ratio=case["sampling_ratio"],
      aligned=case["aligned"],
    )
    np.save(prefix + "_out.npy", out.numpy().transpose(0, 2, 3, 1))


if __name__ == "__main__":
  main(sys.argv[1])
