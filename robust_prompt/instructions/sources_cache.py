"""The instruction sources at pinned commits, downloaded once into a cache and checksummed.

`robust-prompt instructions build` without `--source` uses these:

* FLAN v2 (google-research/FLAN at `FLAN_COMMIT`): `flan/v2/templates.py`,
  `flan/v2/flan_templates_branched.py` and `flan/v2/constants_niv2.py`, each fetched from
  raw.githubusercontent.com and checked against its SHA-256.
* PromptSource (bigscience-workshop/promptsource at `PROMPTSOURCE_COMMIT`): its
  `promptsource/templates/` tree (279 `templates.yaml` files). raw.githubusercontent.com serves
  single files and no listing, so the tree comes from GitHub's archive of that commit; the
  archive's bytes are not stable, so what is checked is the tree: the SHA-256 of the sorted
  "<path>\\0<sha256 of the file>\\n" lines of every templates.yaml (`tree_digest`).

The cache is `$ROBUST_PROMPT_CACHE_DIR` (default `$XDG_CACHE_HOME/robust_prompt`, else
`~/.cache/robust_prompt`), under `sources/<name>-<commit>/`. With `ROBUST_PROMPT_OFFLINE=1` or
`HF_HUB_OFFLINE=1` nothing is downloaded: a source not in the cache is an error that says what to
download and where to put it. A download goes to a temporary folder first and is moved into the
cache only once every checksum matched, so the cache never holds a partial or altered copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

FLAN_COMMIT = "e9e4ec6e2701182c7a91af176f705310da541277"
PROMPTSOURCE_COMMIT = "7dab96a3eeb3717cea633705135ebc488885d709"
RAW_BASE = "https://raw.githubusercontent.com"
ARCHIVE_BASE = "https://codeload.github.com"
CACHE_ENV = "ROBUST_PROMPT_CACHE_DIR"
OFFLINE_ENVS = ("ROBUST_PROMPT_OFFLINE", "HF_HUB_OFFLINE")
TIMEOUT_S = 60
COMPLETE = ".complete"  # written once a cached copy's checksums matched

Fetch = Callable[[str], bytes]


class SourceError(RuntimeError):
  """A source could not be found, downloaded or verified; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class PinnedSource:
  """A GitHub repository at a fixed commit, cached in a folder of its own.

  Attributes:
    name: the cache folder's name ("flan_v2", "promptsource").
    repo: "owner/name" on GitHub.
    commit: the full commit hash.
  """

  name: str
  repo: str
  commit: str


@dataclasses.dataclass(frozen=True)
class PinnedFiles(PinnedSource):
  """Single files of a repository at a commit, each with its SHA-256 (fetched one by one).

  Attributes:
    files: path in the repository -> SHA-256 of its bytes; stored under their base names.
  """

  files: Mapping[str, str]

  def url(self, path: str, base: str = RAW_BASE) -> str:
    return f"{base}/{self.repo}/{self.commit}/{path}"


@dataclasses.dataclass(frozen=True)
class PinnedTree(PinnedSource):
  """A folder of a repository at a commit, from GitHub's archive, checked by `tree_digest`.

  Attributes:
    subdir: the folder inside the repository ("promptsource/templates").
    pattern: the files of the folder that are kept and checked ("templates.yaml").
    digest: `tree_digest` of the kept files.
  """

  subdir: str
  pattern: str
  digest: str

  def url(self, base: str = ARCHIVE_BASE) -> str:
    return f"{base}/{self.repo}/tar.gz/{self.commit}"


FLAN = PinnedFiles(
  name="flan_v2",
  repo="google-research/FLAN",
  commit=FLAN_COMMIT,
  files={
    "flan/v2/templates.py": "a237eed450ccc5d54508d724d3884b1ab0bcf4ba791a2e1a0645f55b34f3b385",
    "flan/v2/flan_templates_branched.py": (
      "843fe10d59be4cf5686c97f7a6d141e481e2d272dff4884894b68ea77ec24493"
    ),
    "flan/v2/constants_niv2.py": "a4e3a26e245817f99e00eece3bc013fc4e24f2df832dd8a726f708cb65073dec",
  },
)
PROMPTSOURCE = PinnedTree(
  name="promptsource",
  repo="bigscience-workshop/promptsource",
  commit=PROMPTSOURCE_COMMIT,
  subdir="promptsource/templates",
  pattern="templates.yaml",
  digest="753af84b996e4114b85568c92c3cdfdee8afd7daca5294a564b68eb50dd74528",
)
SOURCES = {"flan_v2": FLAN, "promptsource": PROMPTSOURCE}


def cache_dir() -> pathlib.Path:
  """The cache root (`$ROBUST_PROMPT_CACHE_DIR`, else the XDG cache's robust_prompt folder)."""
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return pathlib.Path(base) / "robust_prompt"


def offline() -> str | None:
  """The variable that makes us offline ("HF_HUB_OFFLINE"), or None when downloads are allowed."""
  for name in OFFLINE_ENVS:
    if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
      return name
  return None


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def tree_digest(root: pathlib.Path, pattern: str) -> str:
  """SHA-256 over the sorted "<relative path>\\0<sha256>\\n" lines of the files named `pattern`."""
  files = sorted(root.rglob(pattern), key=lambda p: p.relative_to(root).as_posix())
  lines = "".join(f"{p.relative_to(root).as_posix()}\0{sha256(p.read_bytes())}\n" for p in files)
  return sha256(lines.encode("utf-8"))


def _urlopen(url: str) -> bytes:
  with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 (https/file)
    return response.read()


def location(source: PinnedFiles | PinnedTree) -> pathlib.Path:
  """Where `source` lives in the cache (it may not be there yet)."""
  return cache_dir() / "sources" / f"{source.name}-{source.commit[:12]}"


def ensure(
  source: PinnedFiles | PinnedTree, *, fetch: Fetch = _urlopen, base: str | None = None
) -> pathlib.Path:
  """The cached copy of `source`, downloading and verifying it first when it is missing.

  Args:
    source: `FLAN` or `PROMPTSOURCE` (or a pin of the same kind).
    fetch: URL -> bytes (tests pass their own; file:// URLs work with the default).
    base: URL base instead of raw.githubusercontent.com / codeload.github.com (a mirror).

  Returns:
    The folder holding the files (FLAN: templates.py, flan_templates_branched.py,
    constants_niv2.py; PromptSource: the templates/ tree).

  Raises:
    SourceError: offline and not cached, the download failed, or a checksum did not match.
  """
  target = location(source)
  problem = "it is not there"
  if target.is_dir():
    if (target / COMPLETE).is_file():
      return target
    # A copy put there by hand (offline machines): accept it once its checksums match.
    problem = verify(source, target)
    if problem is None:
      (target / COMPLETE).write_text(f"{source.repo}@{source.commit}\n", encoding="utf-8")
      return target
  why_offline = offline()
  if why_offline:
    raise SourceError(
      f"{why_offline} is set (offline) and the cache has no usable copy of {source.name} at "
      f"commit {source.commit[:12]} in {target} ({problem}). "
      f"{_manual_instructions(source, target)} Or pass --source with a local copy."
    )
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.name}-") as tmp:
    staging = pathlib.Path(tmp) / "tree"
    staging.mkdir()
    if isinstance(source, PinnedFiles):
      _download_files(source, staging, fetch, base or RAW_BASE)
    else:
      _download_tree(source, staging, fetch, base or ARCHIVE_BASE)
    (staging / COMPLETE).write_text(f"{source.repo}@{source.commit}\n", encoding="utf-8")
    if target.exists():  # an earlier, incomplete attempt
      shutil.rmtree(target)
    staging.rename(target)
  return target


def verify(source: PinnedFiles | PinnedTree, folder: pathlib.Path) -> str | None:
  """None when `folder` holds exactly the pinned files; else what is wrong."""
  if isinstance(source, PinnedFiles):
    for path, expected in source.files.items():
      file = folder / pathlib.PurePosixPath(path).name
      if not file.is_file():
        return f"{file.name} is missing"
      if sha256(file.read_bytes()) != expected:
        return f"{file.name} does not match its pinned SHA-256 {expected}"
    return None
  if tree_digest(folder, source.pattern) != source.digest:
    return f"its {source.pattern} files do not match the pinned tree digest {source.digest}"
  return None


def _get(url: str, fetch: Fetch, source: PinnedFiles | PinnedTree) -> bytes:
  try:
    return fetch(url)
  except (urllib.error.URLError, OSError, ValueError) as e:
    raise SourceError(
      f"could not download {url}: {getattr(e, 'reason', e)}. "
      f"{_manual_instructions(source, location(source))}"
    ) from e


def _download_files(source: PinnedFiles, staging: pathlib.Path, fetch: Fetch, base: str) -> None:
  for path, expected in source.files.items():
    url = source.url(path, base)
    data = _get(url, fetch, source)
    got = sha256(data)
    if got != expected:
      raise SourceError(
        f"{url}: SHA-256 {got} does not match the pinned {expected}; the download is corrupt or "
        "not the pinned commit. Nothing was written to the cache."
      )
    (staging / pathlib.PurePosixPath(path).name).write_bytes(data)


def _download_tree(source: PinnedTree, staging: pathlib.Path, fetch: Fetch, base: str) -> None:
  url = source.url(base)
  data = _get(url, fetch, source)
  wanted = f"/{source.subdir.strip('/')}/"
  try:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
      for member in archive.getmembers():
        # GitHub archives hold one top folder "<repo>-<commit>/"; keep only the pinned subdir.
        name = "/" + member.name.split("/", 1)[-1] if "/" in member.name else ""
        if not member.isfile() or not name.startswith(wanted):
          continue
        relative = pathlib.PurePosixPath(name[len(wanted) :])
        if relative.name != source.pattern or ".." in relative.parts:
          continue
        out = staging.joinpath(*relative.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(archive.extractfile(member).read())
  except tarfile.TarError as e:
    raise SourceError(f"{url}: not a gzipped tar archive ({e})") from e
  got = tree_digest(staging, source.pattern)
  if got != source.digest:
    raise SourceError(
      f"{url}: the {source.subdir}/**/{source.pattern} files have tree digest {got}, not the "
      f"pinned {source.digest}; the archive is not the pinned commit. Nothing was written to the "
      "cache."
    )


def _manual_instructions(source: PinnedFiles | PinnedTree, target: pathlib.Path) -> str:
  if isinstance(source, PinnedFiles):
    names = ", ".join(source.url(p) for p in source.files)
    return f"To provide it by hand, download {names} into {target}/."
  return (
    f"To provide it by hand, download {source.url()} and extract its {source.subdir}/ folder "
    f"as {target}/."
  )
