"""Dynamic request batching: many concurrent requests become few batched model calls.

The queue, batch formation (Triton's dynamic batcher semantics), deadlines and statistics are
Rust; see :class:`DynamicBatcher`.
"""

from servekit.batching.batcher import DynamicBatcher, RequestTiming, Runner
from servekit.batching.policy import QueuePolicy, TimeoutAction

__all__ = ["DynamicBatcher", "QueuePolicy", "RequestTiming", "Runner", "TimeoutAction"]
