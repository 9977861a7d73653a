"""Which config.pbtxt fields servekit honours. Every other field that is set is refused at
load with a message naming it: a field accepted and then ignored (a stateful sequence model
served as stateless, a GPU group run on the CPU) is worse than a refusal.

Honoured (Triton semantics): ``name``, ``platform``, ``backend``, ``version_policy``,
``max_batch_size``, ``default_model_filename``; inputs and outputs (``name``, ``data_type``,
``dims``, ``reshape``, input ``optional``); ``dynamic_batching`` (``preferred_batch_size``,
``max_queue_delay_microseconds``, ``preserve_ordering``, ``priority_levels``,
``default_priority_level``, ``default_queue_policy`` and ``priority_queue_policy``, each
policy with ``max_queue_size``, ``default_timeout_microseconds``, ``allow_timeout_override``
and ``timeout_action`` REJECT or DELAY: see :class:`servekit.batching.QueuePolicy`);
``instance_group`` (``name``, ``count``, ``kind``, ``gpus``: see
:func:`servekit.serving.config.instance_device`); ``model_warmup`` (see
:mod:`servekit.serving.warmup`).

``preserve_ordering`` holds trivially: each request is answered on its own connection or
stream slot, so no response can overtake another of the same client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import FieldDescriptor

from servekit.errors import InvalidArgumentError

if TYPE_CHECKING:
    from servekit.serving.config import ModelConfig

#: Fields honoured together with everything under them.
_SUBTREES = {"version_policy", "input.reshape", "output.reshape", "model_warmup"}

#: Fields honoured one by one (a message listed here is honoured as a container only).
_FIELDS = {
    "name",
    "platform",
    "backend",
    "max_batch_size",
    "default_model_filename",
    "input",
    "input.name",
    "input.data_type",
    "input.dims",
    "input.optional",
    "output",
    "output.name",
    "output.data_type",
    "output.dims",
    "dynamic_batching",
    "dynamic_batching.preferred_batch_size",
    "dynamic_batching.max_queue_delay_microseconds",
    "dynamic_batching.preserve_ordering",
    "dynamic_batching.priority_levels",
    "dynamic_batching.default_priority_level",
    "dynamic_batching.default_queue_policy",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "dynamic_batching.default_queue_policy.default_timeout_microseconds",
    "dynamic_batching.default_queue_policy.allow_timeout_override",
    "dynamic_batching.default_queue_policy.timeout_action",
    # A map, judged as a whole: every ModelQueuePolicy field is honoured.
    "dynamic_batching.priority_queue_policy",
    "instance_group",
    "instance_group.name",
    "instance_group.count",
    "instance_group.kind",
    "instance_group.gpus",
}

#: Why some fields are refused, where a reason helps more than "not supported".
_REASONS = {
    "sequence_batching": "stateful sequence models are not supported (servekit would serve "
    "the model as stateless)",
    "ensemble_scheduling": "ensembles are not supported",
    "optimization": "execution accelerators and optimization settings are not supported",
    "parameters": "backend parameters are not supported",
}


def _set_fields(message: Any, prefix: str = "") -> Iterator[str]:
    """The dotted path of every field set in ``message``, parents before children."""
    for descriptor, value in message.ListFields():
        path = f"{prefix}{descriptor.name}"
        yield path
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE or path in _SUBTREES:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            continue  # a map is judged as a whole
        items = value if descriptor.is_repeated else [value]
        seen: set[str] = set()
        for item in items:
            for child in _set_fields(item, path + "."):
                if child not in seen:
                    seen.add(child)
                    yield child


def refuse_unsupported(config: ModelConfig) -> None:
    """Return None when every field set in ``config`` is honoured; raise InvalidArgumentError
    naming the first field that is not (and why, for the common ones)."""
    for path in _set_fields(config):
        if path in _FIELDS or path in _SUBTREES:
            continue
        why = _REASONS.get(path, "servekit does not honour it and will not ignore it")
        raise InvalidArgumentError(
            f"model '{config.name}': config field '{path}' is not supported: {why}"
        )
