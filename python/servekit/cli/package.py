"""``servekit package``: export a model file, build variants, check parity, print the report."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import click

from servekit.cli._arrays import load_array
from servekit.cli._progress import progress_option
from servekit.errors import InvalidArgumentError

_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def load_sklearn(path: Path, allow_pickle: bool, trusted: tuple[str, ...] = ()) -> Any:
    """Load a scikit-learn model: skops files safely, joblib/pickle only with ``allow_pickle``.

    Raises InvalidArgumentError for a missing file, a pickle without ``allow_pickle``, a skops
    file holding types outside skops' trusted defaults and ``trusted`` (listed), or an unknown
    extension.
    """
    if not path.is_file():
        raise InvalidArgumentError(f"model file {str(path)!r} does not exist")
    if path.suffix == ".skops":
        import skops.io

        try:
            untrusted = skops.io.get_untrusted_types(file=path)
        except Exception as exc:  # skops raises zipfile/JSON errors for other files
            raise InvalidArgumentError(f"{str(path)!r} is not a skops file: {exc}") from None
        unknown = [t for t in untrusted if t not in trusted]
        if unknown:
            raise InvalidArgumentError(
                f"{str(path)!r} holds types skops does not trust by default: "
                f"{', '.join(unknown)}; pass --trust TYPE for each one you trust"
            )
        return skops.io.load(path, trusted=list(untrusted))
    if path.suffix in _PICKLE_SUFFIXES:
        if not allow_pickle:
            raise InvalidArgumentError(
                f"{str(path)!r} is a pickle, and loading a pickle runs arbitrary code: pass "
                "--allow-pickle only for files you trust, or save the model with skops"
            )
        import joblib

        return joblib.load(path)
    raise InvalidArgumentError(
        f"unknown scikit-learn model file {str(path)!r}: expected .skops "
        f"(or {', '.join(_PICKLE_SUFFIXES)} with --allow-pickle)"
    )


def load_torch(spec: str, state_dict: Path | None) -> Any:
    """Load a torch model: a TorchScript file, or ``module:factory`` (+ ``state_dict``).

    The factory is called without arguments and must return an nn.Module; the state dict is
    loaded with ``weights_only=True``. Raises InvalidArgumentError naming what is wrong.
    """
    import torch

    from servekit.packaging.export import load_torchscript

    if Path(spec).is_file():
        if state_dict is not None:
            raise InvalidArgumentError(
                "--state-dict goes with module:factory, not a TorchScript file"
            )
        return load_torchscript(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgumentError(
            f"torch model {spec!r} is neither a TorchScript file nor 'module:factory'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgumentError(f"cannot import {spec!r}: {exc}") from None
    model = factory()
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(
            f"{spec!r} returned a {type(model).__name__}, expected a torch.nn.Module"
        )
    if state_dict is not None:
        try:
            weights = torch.load(state_dict, map_location="cpu", weights_only=True)
            model.load_state_dict(weights)
        except (OSError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise InvalidArgumentError(
                f"cannot load state dict {str(state_dict)!r}: {first}"
            ) from None
    return model.eval()


@click.command("package")
@click.argument("model_file")
@click.option(
    "--framework", type=click.Choice(["sklearn", "torch"]), required=True, help="Model framework."
)
@click.option(
    "--inputs",
    "inputs",
    type=click.Path(path_type=Path),
    required=True,
    help="Sample inputs (.npy): calibration, fine-tuning and parity data.",
)
@click.option("--labels", type=click.Path(path_type=Path), help="Labels (.npy) for accuracy/R^2.")
@click.option("--name", required=True, help="Package name.")
@click.option(
    "--variants",
    default="onnx,int8-dynamic,int8-static,fp16,torchscript,pruned,distilled",
    show_default=True,
    help="Comma-separated variants to build (onnx is the fp32 export, always built).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the variant artifacts (default: a new temporary directory).",
)
@click.option(
    "--calibration",
    type=click.Choice(["minmax", "percentile", "entropy"]),
    default="minmax",
    show_default=True,
    help="int8-static calibration method.",
)
@click.option(
    "--state-dict",
    "state_dict",
    type=click.Path(path_type=Path),
    help="torch: weights (state dict) for the module built by MODEL_FILE=module:factory.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="scikit-learn: allow joblib/pickle model files. WARNING: loading a pickle runs "
    "arbitrary code; use only with files you trust (prefer .skops).",
)
@click.option(
    "--trust",
    "trust",
    multiple=True,
    help="scikit-learn .skops: a type to trust beyond skops' defaults (repeatable).",
)
@click.option(
    "--registry",
    "registry",
    type=click.Path(file_okay=False, path_type=Path),
    help="Register the fp32 export and every passing variant in this registry.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@progress_option
def package_command(
    model_file: str,
    framework: str,
    inputs: Path,
    labels: Path | None,
    name: str,
    variants: str,
    out: Path | None,
    calibration: str,
    state_dict: Path | None,
    allow_pickle: bool,
    trust: tuple[str, ...],
    registry: Path | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Package MODEL_FILE: a .skops file (sklearn; joblib/pickle with --allow-pickle), or for
    torch a TorchScript file or module:factory with --state-dict."""
    from servekit.packaging import package, parse_variants

    kinds = parse_variants(variants)
    x = load_array(inputs, "inputs")
    y = load_array(labels, "labels") if labels is not None else None
    if framework == "sklearn":
        if state_dict is not None:
            raise InvalidArgumentError("--state-dict is for torch models")
        model = load_sklearn(Path(model_file), allow_pickle, trust)
    else:
        model = load_torch(model_file, state_dict)
    report = package(
        model,
        x,
        labels=y,
        variants=kinds,
        name=name,
        out_dir=out,
        calibration=calibration,
        registry=registry,
        progress=progress,
    )
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.table())
