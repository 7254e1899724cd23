"""The generated model folder (docs/model-dir.md): its manifest, written atomically, then read and
checked by everything downstream.

The one writer and the one reader of ``kan2mcu.json``: verify, the host compiler and the firmware
builder all read it through :func:`load_model_folder`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kan2mcu import __version__
from kan2mcu.errors import OptionError
from kan2mcu.fsutil import check_writable

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MANIFEST = "kan2mcu.json"
CALIBRATION_FILE = "calibration.npy"  # calibration inputs kept beside the C when no data set is known
# What generate writes besides the C (manifests before the "files" key did not list them)
_GENERATED = (MANIFEST, "test_vectors.json", "report.json", "report.md", "model.npz", CALIBRATION_FILE)
_PLOT = re.compile(r"^layer\d+_edges\.png$")  # `kan2mcu plot` / `generate --plots` (kan2mcu.plots)


@dataclass(frozen=True)
class ModelFolder:
    """A generated model folder: its manifest and test vectors, checked."""

    path: Path
    manifest: dict
    vectors: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def prefix(self) -> str:
        return self.manifest["prefix"]

    @property
    def arith(self) -> str:
        return self.manifest["arith"]


def load_model_folder(model_dir: Path) -> ModelFolder:
    """Read and check ``kan2mcu.json`` and ``test_vectors.json``; OptionError when invalid."""
    model_dir = Path(model_dir).resolve()
    manifest_path = model_dir / MANIFEST
    if not manifest_path.is_file():
        raise OptionError(f"{model_dir} is not a kan2mcu model folder: no kan2mcu.json")
    try:
        manifest = json.loads(manifest_path.read_text())
        vectors = json.loads((model_dir / "test_vectors.json").read_text())
    except (OSError, ValueError) as exc:
        raise OptionError(f"cannot read the model folder {model_dir}: {exc}") from exc
    if manifest.get("format") != "kan2mcu-model":
        raise OptionError(f"{manifest_path} is not a kan2mcu model manifest (format != kan2mcu-model)")
    for key in ("name", "prefix", "arith", "input_size", "output_size", "input_ctype", "output_ctype",
                "sources", "headers"):
        if key not in manifest:
            raise OptionError(f"{manifest_path} lacks the key {key!r}")
    if not _C_IDENTIFIER.match(manifest["prefix"]):
        raise OptionError(f"model prefix {manifest['prefix']!r} is not a C identifier")
    if manifest["arith"] not in ("int", "float"):
        raise OptionError(f"unknown arith {manifest['arith']!r} in {manifest_path}")
    for name in manifest["sources"] + manifest["headers"]:
        if not (model_dir / name).is_file():
            raise OptionError(f"model file {name} listed in {manifest_path} is missing")
    inputs, outputs = vectors.get("inputs", []), vectors.get("outputs", [])
    if not inputs or len(inputs) != len(outputs):
        raise OptionError(f"{model_dir / 'test_vectors.json'} needs as many outputs as inputs (and at least one)")
    if any(len(row) != manifest["input_size"] for row in inputs) or any(
            len(row) != manifest["output_size"] for row in outputs):
        raise OptionError(f"test vector sizes in {model_dir} do not match input_size/output_size")
    return ModelFolder(model_dir, manifest, vectors)


def check_output_folder(folder: Path) -> None:
    """Refuse, before any work, an output path that cannot become a model folder (OptionError)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"-o {folder}: is a file, not a folder")
    check_writable(folder)
    if folder.is_dir() and any(folder.iterdir()):
        foreign = foreign_entries(folder)
        if foreign and not (folder / MANIFEST).is_file():
            raise OptionError(f"-o {folder}: holds other files and is not a kan2mcu model folder; "
                              "pick a new or empty folder (generate replaces the whole folder)")
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OptionError(f"-o {folder}: holds files kan2mcu did not write ({shown}); generate replaces the "
                              "whole folder, so move them out or pick another folder")


def foreign_entries(folder: Path) -> list[str]:
    """The names in ``folder`` that kan2mcu did not write: everything when it holds no readable
    manifest, else what is neither in the manifest's ``files`` (older manifests: its sources,
    headers and the fixed generated names) nor a plot of `kan2mcu plot`."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir())
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return names
    if not isinstance(manifest, dict) or manifest.get("format") != "kan2mcu-model":
        return names
    listed = manifest.get("files")
    if not isinstance(listed, list):
        listed = list(_GENERATED) + list(manifest.get("sources", [])) + list(manifest.get("headers", []))
    owned = {str(name) for name in listed}

    def written_by_kan2mcu(name: str) -> bool:
        return (name in owned or _PLOT.match(name) is not None) and (folder / name).is_file()

    return [name for name in names if not written_by_kan2mcu(name)]


def build_manifest(*, name: str, arith: str, model, imported, input_ctype: str, options: dict, sha: str) -> dict:
    """The manifest (``kan2mcu.json``) of a model folder: what its C is called, takes and returns,
    and, for a checkpoint trained on your own data, what its inputs and outputs mean."""
    manifest = {"format": "kan2mcu-model", "format_version": 1, "name": name, "prefix": name, "arith": arith,
                "input_size": model.layers[0].in_features, "output_size": model.layers[-1].out_features,
                "input_ctype": input_ctype,
                "output_ctype": "int32_t" if arith == "int" else "float",
                "sources": [f"{name}.c"], "headers": [f"{name}.h"], "options": options,
                "source_format": imported.format, "dataset": imported.dataset, "model_sha256": sha,
                "kan2mcu_version": __version__}
    own = {k: model.metadata[k] for k in ("task", "target", "columns", "classes", "target_transform")
           if model.metadata.get(k) is not None}
    if own:  # a checkpoint trained on your own data: what its inputs and outputs mean
        manifest["data"] = own
    return manifest


def write_model_folder(folder: Path, files: dict) -> list:
    """Write the whole model folder atomically: every file goes into a temporary folder beside
    ``folder``, which is then renamed into place; an older model folder is moved aside first and
    removed only once the new one is in place, so no stale file survives and an interrupted write
    (error, Ctrl-C) leaves the old folder untouched."""
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    old = None
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a model folder is not
        for fname, content in files.items():
            target = staging / fname
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old)  # replaces the empty placeholder folder
        os.replace(staging, folder)
    except OSError as exc:
        raise OptionError(f"cannot write the model folder {folder}: {exc.strerror or exc}") from None
    finally:
        if old is not None and not folder.exists():
            os.replace(old, folder)  # interrupted between the two renames: put the old model back
            old = None
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return sorted(files)
