"""Pinned instruction sources: download into the cache, checksums, offline behaviour.

No network: downloads come from file:// mirrors (or a fetch function) built in the test.
"""

import hashlib
import io
import pathlib
import tarfile

import pytest

from robust_prompt.instructions import sources_cache
from robust_prompt.instructions.sources_cache import PinnedFiles, PinnedTree, SourceError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "instructions"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv(sources_cache.CACHE_ENV, str(tmp_path / "cache"))
  for name in sources_cache.OFFLINE_ENVS:
    monkeypatch.delenv(name, raising=False)
  return tmp_path / "cache"


def mirror_files(root: pathlib.Path) -> PinnedFiles:
  """A raw.githubusercontent-like mirror of the FLAN fixture files, and their pin."""
  files = {}
  for name in ("templates.py", "flan_templates_branched.py", "constants_niv2.py"):
    data = (FIXTURES / "flan_v2" / name).read_bytes()
    out = root / "org" / "flan" / COMMIT / "flan" / "v2" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    files[f"flan/v2/{name}"] = hashlib.sha256(data).hexdigest()
  return PinnedFiles("flan_v2", "org/flan", COMMIT, files)


def test_files_downloaded_verified_and_cached(tmp_path, cache):
  pin = mirror_files(tmp_path / "mirror")
  base = (tmp_path / "mirror").as_uri()
  folder = sources_cache.ensure(pin, base=base)
  assert folder == cache / "sources" / f"flan_v2-{COMMIT[:12]}"
  assert (folder / "templates.py").read_bytes() == (
    FIXTURES / "flan_v2" / "templates.py"
  ).read_bytes()
  # Cached: no second download (a fetch that fails proves it).
  assert sources_cache.ensure(pin, fetch=_no_network) == folder


def test_checksum_mismatch_leaves_no_cache(tmp_path, cache):
  pin = mirror_files(tmp_path / "mirror")
  wrong = PinnedFiles(
    pin.name, pin.repo, pin.commit, dict(pin.files, **{"flan/v2/templates.py": "0" * 64})
  )
  with pytest.raises(
    SourceError, match=r"templates\.py: SHA-256 [0-9a-f]{64} does not match the pinned 0{64}"
  ):
    sources_cache.ensure(wrong, base=(tmp_path / "mirror").as_uri())
  assert not sources_cache.location(wrong).exists()


def test_download_failure_says_what_to_fetch(tmp_path):
  pin = mirror_files(tmp_path / "mirror")
  with pytest.raises(SourceError) as info:
    sources_cache.ensure(pin, fetch=_no_network)
  message = str(info.value)
  assert "could not download https://raw.githubusercontent.com/org/flan/" in message
  assert f"into {sources_cache.location(pin)}/" in message


@pytest.mark.parametrize("variable", sources_cache.OFFLINE_ENVS)
def test_offline_uses_only_the_cache(tmp_path, monkeypatch, variable):
  pin = mirror_files(tmp_path / "mirror")
  monkeypatch.setenv(variable, "1")
  with pytest.raises(
    SourceError, match=rf"{variable} is set \(offline\).*it is not there.*download"
  ):
    sources_cache.ensure(pin, fetch=_no_network)
  # A copy put into the cache by hand is used once its checksums match...
  target = sources_cache.location(pin)
  target.mkdir(parents=True)
  for path in pin.files:
    name = pathlib.PurePosixPath(path).name
    (target / name).write_bytes((FIXTURES / "flan_v2" / name).read_bytes())
  assert sources_cache.ensure(pin, fetch=_no_network) == target
  # ...and an altered one is refused, saying which file.
  other = PinnedFiles(pin.name, pin.repo, "f" * 40, pin.files)
  altered = sources_cache.location(other)
  altered.mkdir(parents=True)
  (altered / "templates.py").write_text("changed")
  with pytest.raises(SourceError, match="constants_niv2.py is missing|templates.py does not match"):
    sources_cache.ensure(other, fetch=_no_network)


def test_tree_from_an_archive(tmp_path, cache):
  tree = FIXTURES / "promptsource_tree"
  archive = io.BytesIO()
  with tarfile.open(fileobj=archive, mode="w:gz") as tar:
    tar.add(tree, arcname=f"promptsource-{COMMIT}/promptsource/templates")
    readme = tmp_path / "README.md"
    readme.write_text("not kept")
    tar.add(readme, arcname=f"promptsource-{COMMIT}/README.md")
  pin = PinnedTree(
    "promptsource",
    "org/promptsource",
    COMMIT,
    "promptsource/templates",
    "templates.yaml",
    sources_cache.tree_digest(tree, "templates.yaml"),
  )
  urls = []

  def fetch(url):
    urls.append(url)
    return archive.getvalue()

  folder = sources_cache.ensure(pin, fetch=fetch)
  assert urls == [f"https://codeload.github.com/org/promptsource/tar.gz/{COMMIT}"]
  assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("templates.yaml")) == [
    "ai2_arc/ARC-Easy/templates.yaml",
    "commonsense_qa/templates.yaml",
    "cosmos_qa/templates.yaml",
    "sciq/templates.yaml",
  ]
  assert not (folder / "README.md").exists()
  bad = PinnedTree(pin.name, pin.repo, "e" * 40, pin.subdir, pin.pattern, "0" * 64)
  with pytest.raises(SourceError, match="tree digest .* not the pinned 0{64}"):
    sources_cache.ensure(bad, fetch=fetch)
  with pytest.raises(SourceError, match="not a gzipped tar archive"):
    sources_cache.ensure(bad, fetch=lambda url: b"not a tar")


def test_real_pins_match_the_shared_copies(shared_dir):
  flan = shared_dir / "sources" / "flan_v2"
  assert sources_cache.verify(sources_cache.FLAN, flan) is None
  templates = shared_dir / "sources" / "promptsource" / "templates"
  assert sources_cache.verify(sources_cache.PROMPTSOURCE, templates) is None
  assert sources_cache.FLAN.url("flan/v2/templates.py") == (
    "https://raw.githubusercontent.com/google-research/FLAN/"
    "e9e4ec6e2701182c7a91af176f705310da541277/flan/v2/templates.py"
  )


def _no_network(url: str) -> bytes:
  raise OSError(f"no network in tests: {url}")
