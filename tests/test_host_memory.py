"""The transparent-huge-pages hint of `robust-prompt train` (robust_prompt/host_memory.py)."""

import pytest

from robust_prompt import host_memory


@pytest.mark.parametrize(
  "text, mode",
  [
    ("always [madvise] never\n", "madvise"),
    ("[always] madvise never\n", "always"),
    ("always madvise [never]\n", "never"),
    ("garbage\n", None),
  ],
)
def test_thp_mode_reads_the_bracketed_choice(tmp_path, text, mode):
  path = tmp_path / "enabled"
  path.write_text(text)
  assert host_memory.thp_mode(path) == mode


def test_thp_hint_only_for_cpu_runs_without_huge_pages(tmp_path):
  path = tmp_path / "enabled"
  assert host_memory.thp_mode(tmp_path / "missing") is None
  assert host_memory.thp_hint("cpu", tmp_path / "missing") is None  # not Linux: nothing to say
  path.write_text("always [madvise] never\n")
  hint = host_memory.thp_hint("cpu", path)
  assert "'madvise'" in hint and f"sudo tee {path}" in hint
  assert host_memory.thp_hint("gpu", path) is None  # device memory: not these pages
  path.write_text("[always] madvise never\n")
  assert host_memory.thp_hint("cpu", path) is None
