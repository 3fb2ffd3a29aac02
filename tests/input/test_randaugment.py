"""RandAugment: every operation and the magnitude tables against torchvision 0.14, and the policy's draws.

torchvision runs under the system python (its torch needs numpy 1.x), once for the whole module: the
images and a JSON list of op chains go in as files, torchvision's `autoaugment._apply_op` (what
`RandAugment.forward` calls, NEAREST, fill None) applies each chain, and the outputs come back as .npy.
"""

import functools
import json
import os
import subprocess
import textwrap

import numpy as np
import pytest
from PIL import Image

from dscl_jax.input import randaugment

_SYSTEM_PYTHON = "/usr/bin/python3"

_TORCHVISION_NAMES = {
  "identity": "Identity",
  "shear_x": "ShearX",
  "shear_y": "ShearY",
  "translate_x": "TranslateX",
  "translate_y": "TranslateY",
  "rotate": "Rotate",
  "brightness": "Brightness",
  "color": "Color",
  "contrast": "Contrast",
  "sharpness": "Sharpness",
  "posterize": "Posterize",
  "solarize": "Solarize",
  "autocontrast": "AutoContrast",
  "equalize": "Equalize",
}
# Table sizes checked against torchvision: 31 bins (the default) and counts whose linspace has no
# vectorised part, one vector pair, or both.
_TABLES = ((31, 32, 40), (31, 28, 28), (31, 224, 224), (10, 331, 500), (2, 28, 28), (17, 40, 32), (64, 96, 128))
_BINS = (0, 1, 9, 10, 15, 30)  # table entries tried for every op: both ends and the common m = 9, 10


def _rng(seed=0):
  return np.random.default_rng(seed)


def _pil(pixels):
  return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)


def _array(image):
  pixels = np.asarray(image)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def _images() -> dict[str, np.ndarray]:
  """uint8 `[H, W, C]` inputs: noise over the full range and over narrow per-channel ranges (so that
  autocontrast and equalize have work to do), and smooth gradients, where rounding shows."""
  rng = _rng(0)
  y, x = np.mgrid[0:32, 0:40].astype(np.float64)
  disc = ((y - 14) ** 2 + (x - 15) ** 2 < 64) * 70.0
  smooth = np.stack([30 + 4 * x + disc, 210 - 5 * y + 0.5 * disc, 50 + 3 * (x + y) % 140], -1)
  y, x = np.mgrid[0:28, 0:28].astype(np.float64)
  return {
    "rgb_noise": rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),
    "rgb_narrow": rng.integers([30, 60, 5], [200, 150, 250], (32, 40, 3)).astype(np.uint8),
    "rgb_smooth": np.clip(smooth, 0, 255).astype(np.uint8),
    "l_noise": rng.integers(20, 230, (28, 28, 1), dtype=np.uint8),
    "l_smooth": (40 + 5 * x + 2 * y)[..., None].astype(np.uint8),
    "l_wide": rng.integers(0, 256, (20, 30, 1), dtype=np.uint8),
  }


def _single_op_cases(height: int, width: int) -> list[list[tuple[str, float]]]:
  """One-op chains: every op at table entries `_BINS` with both signs, plus values off the table."""
  space = randaugment.augmentation_space(31, height, width)
  cases = []
  for name, (magnitudes, signed) in space.items():
    values = [float(magnitudes[b]) for b in _BINS] if magnitudes.ndim else [0.0]
    cases += [[(name, value)] for value in values]
    if signed:
      cases += [[(name, -value)] for value in values]
  extremes = {
    "shear_x": (1.0, -1.0, 0.05),
    "shear_y": (1.0, -1.0, -0.05),
    # Truncation towards zero, and shifts past the border (all fill).
    "translate_x": (3.7, -3.7, 0.9, width + 5.0, -(width + 5.0)),
    "translate_y": (3.7, -3.7, -0.9, height + 5.0, -(height + 5.0)),
    "rotate": (45.5, -45.5, 90.0, -90.0, 180.0, 17.3),
    "brightness": (-1.0, 1.5),
    "color": (-1.0, 1.5),
    "contrast": (-1.0, 1.5),
    "sharpness": (-1.0, 1.5),
    "posterize": tuple(float(bits) for bits in range(1, 9)),
    "solarize": (0.0, 1.0, 127.5, 128.0, 255.0, 255.5, 256.0, -1.0),
  }
  for name, values in extremes.items():
    cases += [[(name, value)] for value in values]
  return cases


def _policy_seeds():
  """(seed, num_ops, magnitude) of the full-policy draws replayed through torchvision."""
  return [
    (seed, num_ops, magnitude)
    for seed, (num_ops, magnitude) in enumerate([(2, 9), (3, 10), (4, 30), (2, 0), (6, 15), (3, 9)])
  ]


# ------------------------------------------------------------------------- torchvision, out of process


@functools.lru_cache(maxsize=1)
def _has_torchvision() -> bool:
  if not os.path.exists(_SYSTEM_PYTHON):
    return False
  return subprocess.run([_SYSTEM_PYTHON, "-c", "import torchvision"], capture_output=True).returncode == 0


_PROGRAM = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from PIL import Image
    from torchvision.transforms import InterpolationMode, autoaugment
    root = sys.argv[1]
    request = json.load(open(os.path.join(root, 'request.json')))
    for name, chains in request['chains'].items():
      pixels = np.load(os.path.join(root, 'in_' + name + '.npy'))
      outputs = []
      for chain in chains:
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        for op, magnitude in chain:
          image = autoaugment._apply_op(image, op, magnitude, interpolation=InterpolationMode.NEAREST,
                                        fill=None)
        out = np.asarray(image)
        outputs.append(out[..., None] if out.ndim == 2 else out)
      np.save(os.path.join(root, 'out_' + name + '.npy'), np.stack(outputs))
    tables = {}
    for bins, height, width in request['tables']:
      space = autoaugment.RandAugment()._augmentation_space(bins, (height, width))
      tables['%dx%dx%d' % (bins, height, width)] = {
          op: {'values': m.tolist(), 'dtype': str(m.numpy().dtype), 'signed': bool(signed)}
          for op, (m, signed) in space.items()}
    json.dump(tables, open(os.path.join(root, 'tables.json'), 'w'))
""")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """Every op chain of the module through torchvision in ONE system-python run.

  Returns `(images, chains, outputs, tables)`: `chains[image]` lists op chains (lists of (our op name,
  signed magnitude)), `outputs[image]` is torchvision's uint8 `[len(chains), H, W, C]` and `tables` is
  `_augmentation_space` per "bins x H x W" as JSON (values exact: float32 -> Python float).
  """
  if not _has_torchvision():
    pytest.skip("torchvision is not importable by /usr/bin/python3")
  root = tmp_path_factory.mktemp("randaugment_reference")
  images = _images()
  chains = {}
  for name, pixels in images.items():
    height, width = pixels.shape[:2]
    chains[name] = _single_op_cases(height, width)
    for seed, num_ops, magnitude in _policy_seeds():
      chains[name].append(randaugment.sample_ops(_rng(seed), num_ops, magnitude, 31, height, width))
    np.save(root / f"in_{name}.npy", pixels)
  request = {
    "chains": {
      name: [[(_TORCHVISION_NAMES[op], value) for op, value in chain] for chain in image_chains]
      for name, image_chains in chains.items()
    },
    "tables": _TABLES,
  }
  (root / "request.json").write_text(json.dumps(request))
  result = subprocess.run([_SYSTEM_PYTHON, "-c", _PROGRAM, str(root)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  outputs = {name: np.load(root / f"out_{name}.npy") for name in images}
  tables = json.loads((root / "tables.json").read_text())
  return images, chains, outputs, tables


def test_every_operation_matches_torchvision(reference):
  """Each op, table entries of both signs and values off the table, bit for bit on every image.

  Both sides run PIL's C code (Pillow 13 in the venv, Debian's 9.4 for torchvision) with the same
  matrices, thresholds and factors, and agree to the last uint8 level.
  """
  images, chains, outputs, _ = reference
  mismatches, checked = [], set()
  for name, pixels in images.items():
    num_single = len(_single_op_cases(*pixels.shape[:2]))
    for chain, expected in zip(chains[name][:num_single], outputs[name][:num_single]):
      ((op, value),) = chain
      ours = _array(randaugment.OPS[op](_pil(pixels), value))
      checked.add(op)
      if ours.shape != expected.shape or not np.array_equal(ours, expected):
        levels = np.abs(ours.astype(np.int64) - expected).max() if ours.shape == expected.shape else "shape"
        mismatches.append(f"{name} {op}({value!r}): max level difference {levels}")
  assert checked == set(randaugment.OPS)
  assert not mismatches, "\n".join(mismatches)


def test_rand_augment_matches_torchvision_replaying_its_draws(reference):
  """Whole policies (2 to 6 ops): rand_augment equals torchvision applying the ops `sample_ops` drew."""
  images, chains, outputs, _ = reference
  num_policies = len(_policy_seeds())
  for name, pixels in images.items():
    for (seed, num_ops, magnitude), chain, expected in zip(
      _policy_seeds(), chains[name][-num_policies:], outputs[name][-num_policies:]
    ):
      ours = randaugment.rand_augment(_pil(pixels), _rng(seed), num_ops, magnitude)
      np.testing.assert_array_equal(_array(ours), expected, err_msg=f"{name}: {chain}")


def test_augmentation_space_matches_torchvision(reference):
  """Names (in order), signs and every magnitude bit for bit, torch's float32 linspace included."""
  *_, tables = reference
  for bins, height, width in _TABLES:
    theirs = tables[f"{bins}x{height}x{width}"]
    ours = randaugment.augmentation_space(bins, height, width)
    assert [_TORCHVISION_NAMES[op] for op in ours] == list(theirs)
    for op, (magnitudes, signed) in ours.items():
      reference_op = theirs[_TORCHVISION_NAMES[op]]
      expected = np.array(reference_op["values"], dtype=reference_op["dtype"])
      assert signed == reference_op["signed"], op
      assert magnitudes.dtype == expected.dtype and magnitudes.shape == expected.shape, (op, bins)
      assert magnitudes.tobytes() == expected.tobytes(), (op, bins, height, width, magnitudes, expected)


# ---------------------------------------------------------------------------------- without torchvision


def test_augmentation_space_ranges():
  space = randaugment.augmentation_space(31, 32, 40)
  assert list(space) == list(randaugment.OPS)
  magnitudes, signed = space["translate_x"]
  assert signed and magnitudes[0] == 0 and np.isclose(magnitudes[-1], 150 / 331 * 40, rtol=1e-7)
  assert np.isclose(space["translate_y"][0][-1], 150 / 331 * 32, rtol=1e-7)
  np.testing.assert_array_equal(space["posterize"][0][[0, 3, 4, 11, 12, 30]], [8, 8, 7, 7, 6, 4])
  assert space["solarize"][0][0] == 255 and space["solarize"][0][-1] == 0 and not space["solarize"][1]
  assert all(space[op][0].ndim == 0 for op in ("identity", "autocontrast", "equalize"))
  # The tables are copies: editing one changes nothing for the policy.
  space["rotate"][0][:] = 0
  assert randaugment.augmentation_space(31, 32, 40)["rotate"][0][-1] == 30


def test_no_ops_is_the_identity():
  image = _pil(_images()["rgb_noise"])
  rng = _rng(3)
  out = randaugment.rand_augment(image, rng, num_ops=0)
  np.testing.assert_array_equal(_array(out), _array(image))
  assert rng.integers(1 << 30) == _rng(3).integers(1 << 30)  # and no random numbers were drawn


@pytest.mark.parametrize("name", ["rgb_smooth", "l_wide"])
def test_same_seed_same_image_and_seeds_differ(name):
  image = _pil(_images()[name])
  outputs = [_array(randaugment.rand_augment(image, _rng(seed), 2, 10)) for seed in range(8)]
  again = [_array(randaugment.rand_augment(image, _rng(seed), 2, 10)) for seed in range(8)]
  for first, second in zip(outputs, again):
    np.testing.assert_array_equal(first, second)
    assert first.shape == _array(image).shape
  distinct = {out.tobytes() for out in outputs}
  assert len(distinct) >= 6


def test_rand_augment_applies_the_sampled_ops_in_order():
  pixels = _images()["rgb_narrow"]
  for seed in range(10):
    chain = randaugment.sample_ops(_rng(seed), 4, 12, 31, 32, 40)
    expected = _pil(pixels)
    for op, value in chain:
      expected = randaugment.OPS[op](expected, value)
    out = randaugment.rand_augment(_pil(pixels), _rng(seed), 4, 12)
    np.testing.assert_array_equal(_array(out), _array(expected), err_msg=str(chain))


def test_ops_are_uniform_with_fair_signs():
  """14 ops drawn with replacement, each 1/14 (chi-square), signed ones negated half the time."""
  draws = 14_000
  chosen = randaugment.sample_ops(_rng(5), draws, 9, 31, 32, 40)
  assert len(chosen) == draws
  names = list(randaugment.OPS)
  counts = np.array([sum(op == name for op, _ in chosen) for name in names])
  expected = draws / len(names)
  chi_square = ((counts - expected) ** 2 / expected).sum()
  assert chi_square < 34.5, dict(zip(names, counts))  # the 0.999 quantile for 13 degrees of freedom
  space = randaugment.augmentation_space(31, 32, 40)
  for name, count in zip(names, counts):
    magnitudes, signed = space[name]
    values = np.array([value for op, value in chosen if op == name])
    table_value = float(magnitudes[9]) if magnitudes.ndim else 0.0
    np.testing.assert_array_equal(np.abs(values), table_value)
    negative = np.sum(np.signbit(values))
    if signed:  # Binomial(count ~ 1000, 1/2): sd ~ 16
      assert abs(negative - count / 2) < 4 * np.sqrt(count / 4), (name, negative, count)
    else:
      assert negative == 0, name
  assert randaugment.sample_ops(_rng(0), 0, 9, 31, 32, 40) == []


def test_geometric_ops_closed_forms():
  """Translations shift whole pixels and fill black; shears are about the top-left corner."""
  pixels = _images()["rgb_noise"]
  image = _pil(pixels)
  right = _array(randaugment.translate_x(image, 3.9))  # truncated to 3 pixels
  np.testing.assert_array_equal(right[:, 3:], pixels[:, :-3])
  assert not right[:, :3].any()
  up = _array(randaugment.translate_y(image, -5.2))
  np.testing.assert_array_equal(up[:-5], pixels[5:])
  assert not up[-5:].any()
  assert not _array(randaugment.translate_x(image, -45.0)).any()
  # Shear by 1 along x: the output pixel (x, y) takes the input pixel containing the point
  # (x + 1/2 + (y + 1/2), y + 1/2), so row y is row y shifted left by y + 1.
  sheared = _array(randaugment.shear_x(image, 1.0))
  for row in (0, 5, 17):
    np.testing.assert_array_equal(sheared[row, : 39 - row], pixels[row, row + 1 :])
    assert not sheared[row, 39 - row :].any()
  # By -1 along y: the point (x + 1/2, y + 1/2 - (x + 1/2)), so column x is shifted down by x.
  sheared = _array(randaugment.shear_y(image, -1.0))
  for column in (0, 4, 30):
    np.testing.assert_array_equal(sheared[column:, column], pixels[: 32 - column, column])
    assert not sheared[:column, column].any()
  np.testing.assert_array_equal(_array(randaugment.shear_y(image, 0.0)), pixels)
  np.testing.assert_array_equal(_array(randaugment.rotate(image, 0.0)), pixels)


def test_colour_ops_closed_forms():
  gray = _pil(_images()["l_noise"])
  for value in (-0.9, 0.4):  # saturation does nothing to a single channel
    np.testing.assert_array_equal(_array(randaugment.color(gray, value)), _array(gray))
  levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  ramp = _pil(levels)
  np.testing.assert_array_equal(_array(randaugment.posterize(ramp, 5.0)), levels & 0b11111000)
  np.testing.assert_array_equal(_array(randaugment.solarize(ramp, 100.0)), np.where(levels < 100, levels, 255 - levels))
  assert not _array(randaugment.brightness(ramp, -1.0)).any()
  narrow = levels // 3 + 50  # levels 50..135: autocontrast multiplies by 255 / 85 = 3 exactly
  np.testing.assert_array_equal(_array(randaugment.autocontrast(_pil(narrow))), (narrow - 50) * 3)
  assert randaugment.identity(ramp, 7.0) is ramp


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_op_keeps_mode_and_size(mode):
  image = _pil(_images()["l_wide" if mode == "L" else "rgb_smooth"])
  space = randaugment.augmentation_space(31, image.height, image.width)
  for name, (magnitudes, _) in space.items():
    value = (
      -float(magnitudes[30])
      if magnitudes.ndim and space[name][1]
      else (float(magnitudes[30]) if magnitudes.ndim else 0.0)
    )
    out = randaugment.OPS[name](image, value)
    assert out.mode == mode and out.size == image.size, name


def test_bad_arguments_name_the_value():
  image = _pil(_images()["rgb_noise"])
  with pytest.raises(ValueError, match=r"magnitude must be an integer in \[0, 31\).*got 31"):
    randaugment.rand_augment(image, _rng(), 2, 31)
  with pytest.raises(ValueError, match=r"in \[0, 10\).*got -1"):
    randaugment.rand_augment(image, _rng(), 2, -1, num_magnitude_bins=10)
  with pytest.raises(ValueError, match="got 2.5"):
    randaugment.rand_augment(image, _rng(), 2, 2.5)
  with pytest.raises(ValueError, match="num_ops must be an integer >= 0, got -1"):
    randaugment.rand_augment(image, _rng(), -1)
  with pytest.raises(ValueError, match="num_magnitude_bins must be an integer >= 2, got 1"):
    randaugment.rand_augment(image, _rng(), 2, 0, num_magnitude_bins=1)
  with pytest.raises(ValueError, match="num_magnitude_bins must be an integer >= 2, got 0"):
    randaugment.augmentation_space(0, 32, 32)
  with pytest.raises(ValueError, match="mode 'RGBA'"):
    randaugment.rand_augment(image.convert("RGBA"), _rng())
  with pytest.raises(ValueError, match="mode 'F'"):
    randaugment.rand_augment(image.convert("F"), _rng(), 0)
  with pytest.raises(ValueError, match="1 to 8 bits, got 0.5"):
    randaugment.posterize(image, 0.5)
