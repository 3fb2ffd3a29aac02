"""The prose that summarises the comparison (the README's results, docs/results.md's "What the table says
so far") quotes accuracies from the tables the benchmark scripts render from the JSON records. When a new
record moves a mean, the prose must move with it: every figure it quotes has to be in a rendered table."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
RENDERED = (
  REPO / "benchmarks" / "results" / "compare_fashion_mnist_lt.md",
  REPO / "benchmarks" / "results" / "investigate_dscl_fashion_mnist_lt.md",
)
# An accuracy as the tables print it: two digits, two decimals, and its seed std when there is one (prose
# may wrap a line around the ±).
FIGURE = re.compile(r"(?<![\d.])\d{2}\.\d{2}(?:\s+±\s+\d+\.\d{2})?(?!\d|\.\d)")
RUNS = re.compile(r"(\d+)\s+of\s+(?:its\s+|the\s+)?45\b")
SUMMARIES = (("README.md", "## Results"), ("docs/results.md", "### What the table says"))


def section(text: str, heading: str) -> str:
  """The lines under `heading` up to the next heading of the same or a higher level."""
  level = heading.split()[0]
  body = text[text.index(heading + "\n") + len(heading) + 1 :]
  ends = [m.start() for m in re.finditer(r"^#{1,%d} " % len(level), body, flags=re.M)]
  return body[: ends[0]] if ends else body


def figures(text: str) -> list[str]:
  return [" ".join(figure.split()) for figure in FIGURE.findall(text)]


def test_the_check_reads_accuracies_and_their_spread_only():
  text = "reads 85.98 and 74.61 ± 0.86 (4.04x, 310.3 img/s, 445,440 images, 0.39x, 2026.12)"
  assert figures(text) == ["85.98", "74.61 ± 0.86"]
  assert figures("reads 85.88 ±\n  0.14 overall") == ["85.88 ± 0.14"]
  assert figures("ends with 82.45 ± 0.31. And 79.12.") == ["82.45 ± 0.31", "79.12"]
  assert section("# a\n## R\nx 1\n### sub\ny\n## L\nz\n", "## R") == "x 1\n### sub\ny\n"


@pytest.mark.parametrize("document, heading", SUMMARIES)
def test_every_quoted_accuracy_is_in_a_rendered_table(document, heading):
  summary = section((REPO / document).read_text(), heading)
  rendered = "\n".join(path.read_text() for path in RENDERED)
  available = set(figures(rendered))
  quoted = figures(summary)
  assert quoted, f"{document} '{heading}' quotes no accuracy: has the heading moved?"
  stale = [figure for figure in quoted if figure not in available]
  assert not stale, f"{document} '{heading}' quotes figures no rendered table holds (stale?): {stale}"
  recorded = re.search(r"(\d+) of 45 runs recorded", rendered)
  counts = RUNS.findall(summary)
  assert counts, f"{document} '{heading}' does not say how many of the 45 runs are in"
  assert all(count == recorded.group(1) for count in counts), (
    f"{document} '{heading}' says {counts} of 45 runs; the table says {recorded.group(1)}"
  )
