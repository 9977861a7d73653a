"""Structured pruning: physically remove hidden neurons of Linear layers and output channels of
Conv layers (smaller matrices, a real speed-up; masking alone leaves dense weights).

The module is traced with torch.fx and must be a feed-forward chain: Linear/Conv layers joined by
channel-wise operations (activations, dropout, batch norm, pooling, flatten). Each layer but the
last keeps the ``1 - amount`` share of its neurons/channels with the largest L2 weight norm; the
next layer loses the matching input columns/channels (a flatten between a Conv and a Linear maps
each channel to its block of columns). The last layer keeps its outputs.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np

from servekit.errors import InvalidArgumentError, NotApplicableError, UnsupportedModelError

_SUPPORTED = (
    "Linear, Conv1d/Conv2d/Conv3d (groups=1) joined by ReLU, LeakyReLU, GELU, ELU, SiLU, Tanh, "
    "Sigmoid, Dropout, Identity, BatchNorm1d/2d/3d, Max/Avg/AdaptiveAvg pooling and Flatten"
)


def _kinds() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    import torch.nn as nn

    producers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    passthrough = (
        nn.ReLU,
        nn.LeakyReLU,
        nn.GELU,
        nn.ELU,
        nn.SiLU,
        nn.Tanh,
        nn.Sigmoid,
        nn.Dropout,
        nn.Identity,
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
    )
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    flatten = (nn.Flatten,)
    return producers, passthrough, norms, flatten


def _function_kind(target: Any) -> str | None:
    import torch
    import torch.nn.functional as F

    if target in (torch.relu, F.relu, torch.tanh, torch.sigmoid, F.gelu, F.silu, F.dropout):
        return "pass"
    if target in (torch.flatten,):
        return "flatten"
    return None


def _chain(gm: Any) -> list[Any]:
    """The nodes between input and output, checked to form a single chain."""
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output", "get_attr")]
    for node in nodes:
        if len(node.users) != 1:
            raise UnsupportedModelError(
                f"structured pruning needs a feed-forward chain; {node.name} feeds "
                f"{len(node.users)} operations (supported: {_SUPPORTED})"
            )
    return nodes


def prune_structured(module: Any, sample: np.ndarray, *, amount: float = 0.5) -> tuple[Any, dict]:
    """Return (a pruned copy of ``module``, parameters) keeping ``1 - amount`` of each hidden
    layer's neurons/channels; the original module is untouched.

    Raises InvalidArgumentError for an amount outside (0, 1), UnsupportedModelError for a layer
    or structure it cannot prune (named, with the supported ones), NotApplicableError for a
    TorchScript module or a model with a single layer (nothing hidden to prune).
    """
    import torch
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    if not 0.0 < amount < 1.0:
        raise InvalidArgumentError(f"prune amount must be in (0, 1), got {amount}")
    if isinstance(module, torch.jit.ScriptModule):
        raise NotApplicableError(
            "pruned: a TorchScript module cannot be restructured; give the Python nn.Module"
        )
    pruned = copy.deepcopy(module).eval()
    try:
        gm = torch.fx.symbolic_trace(pruned)
    except Exception as exc:  # fx raises TraceError and others for dynamic control flow
        raise UnsupportedModelError(
            f"structured pruning cannot trace {type(module).__name__}: {exc}"
        ) from None
    ShapeProp(gm).propagate(torch.from_numpy(np.ascontiguousarray(sample[:2])))
    producers, passthrough, norms, flattens = _kinds()

    # Walk the chain, grouping each producer with the channel-wise ops after it.
    layers: list[dict[str, Any]] = []
    for node in _chain(gm):
        if node.op == "call_module":
            sub = gm.get_submodule(node.target)
            if isinstance(sub, producers):
                if getattr(sub, "groups", 1) != 1:
                    raise UnsupportedModelError(
                        f"structured pruning does not support grouped convolutions ({node.target})"
                    )
                layers.append({"module": sub, "norms": [], "flatten": None, "name": node.target})
                continue
            if isinstance(sub, passthrough):
                continue
            if isinstance(sub, norms) and layers:
                layers[-1]["norms"].append(sub)
                continue
            if isinstance(sub, flattens) and layers:
                layers[-1]["flatten"] = math.prod(node.args[0].meta["tensor_meta"].shape[2:])
                continue
            raise UnsupportedModelError(
                f"structured pruning does not support layer {node.target!r} of type "
                f"{type(sub).__name__}; supported: {_SUPPORTED}"
            )
        kind = _function_kind(node.target) if node.op == "call_function" else None
        if node.op == "call_method" and node.target in ("relu", "tanh", "sigmoid"):
            kind = "pass"
        if node.op == "call_method" and node.target in ("flatten", "view", "reshape"):
            kind = "flatten"
        if kind == "pass":
            continue
        if kind == "flatten" and layers:
            layers[-1]["flatten"] = math.prod(node.args[0].meta["tensor_meta"].shape[2:])
            continue
        raise UnsupportedModelError(
            f"structured pruning does not support operation {node.op} {node.target!r}; "
            f"supported: {_SUPPORTED}"
        )
    if len(layers) < 2:
        raise NotApplicableError(
            "pruned: the model has a single Linear/Conv layer, no hidden neurons to remove"
        )

    kept_per_layer = []
    with torch.no_grad():
        for layer, nxt in itertools.pairwise(layers):
            mod, next_mod = layer["module"], nxt["module"]
            if isinstance(mod, torch.nn.Linear) and not isinstance(next_mod, torch.nn.Linear):
                raise UnsupportedModelError(
                    f"structured pruning does not support a {type(next_mod).__name__} after "
                    f"Linear layer {layer['name']!r}; supported: {_SUPPORTED}"
                )
            out = mod.weight.shape[0]
            keep_n = max(1, round(out * (1.0 - amount)))
            norms_ = mod.weight.reshape(out, -1).norm(dim=1)
            keep = torch.sort(torch.topk(norms_, keep_n).indices).values
            _slice_outputs(mod, keep)
            for bn in layer["norms"]:
                _slice_norm(bn, keep)
            block = layer["flatten"] or 1
            if isinstance(next_mod, torch.nn.Linear) and block > 1:
                cols = (keep[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
            else:
                cols = keep
            _slice_inputs(next_mod, cols)
            kept_per_layer.append({"layer": layer["name"], "before": out, "after": keep_n})
    params = {
        "amount": amount,
        "criterion": "l2-norm",
        "layers": kept_per_layer,
        "parameters": int(sum(p.numel() for p in pruned.parameters())),
    }
    return pruned, params


def _slice_outputs(mod: Any, keep: Any) -> None:
    import torch

    mod.weight = torch.nn.Parameter(mod.weight[keep].clone())
    if mod.bias is not None:
        mod.bias = torch.nn.Parameter(mod.bias[keep].clone())
    if isinstance(mod, torch.nn.Linear):
        mod.out_features = len(keep)
    else:
        mod.out_channels = len(keep)


def _slice_inputs(mod: Any, cols: Any) -> None:
    import torch

    mod.weight = torch.nn.Parameter(mod.weight[:, cols].clone())
    if isinstance(mod, torch.nn.Linear):
        mod.in_features = len(cols)
    else:
        mod.in_channels = len(cols)


def _slice_norm(bn: Any, keep: Any) -> None:
    import torch

    if bn.weight is not None:
        bn.weight = torch.nn.Parameter(bn.weight[keep].clone())
        bn.bias = torch.nn.Parameter(bn.bias[keep].clone())
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[keep].clone()
        bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)
