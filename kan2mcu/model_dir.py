"""The generated model folder (docs/model-dir.md): read and check its manifest and test vectors.

The one reader of ``kan2mcu.json``: verify, the host compiler and the firmware builder all use it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kan2mcu.errors import OptionError

_C_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MANIFEST = "kan2mcu.json"
# What generate writes besides the C (manifests before the "files" key did not list them)
_GENERATED = ("kan2mcu.json", "test_vectors.json", "report.json", "report.md", "model.npz", "calibration.npy")
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
    manifest_path = model_dir / "kan2mcu.json"
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
