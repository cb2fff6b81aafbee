"""A bounded window of recently seen event ids: the same id again within it is a duplicate.

Each id remembers the input partition it came from, so the window can hand one partition's ids to the
member that takes the partition over (`export_partition` / `load_partition`) and forget them when the
partition leaves (`drop_partition`). Ids of unknown origin (from a checkpoint written before ids had one)
carry ``UNATTRIBUTED``: they stay until the window's size pushes them out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

UNATTRIBUTED = -1


class DedupWindow:
    """Remembers the last ``size`` distinct event ids (O(1) per check; checkpointed with the model)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._order: deque[tuple[str, int]] = deque()
        self._ids: set[str] = set()

    def seen(self, event_id: str, partition: int = UNATTRIBUTED) -> bool:
        """True if ``event_id`` is in the window; otherwise remember it (from ``partition``) and return False."""
        ids = self._ids
        if event_id in ids:
            return True
        ids.add(event_id)
        order = self._order
        order.append((event_id, partition))
        if len(order) > self.size:
            ids.discard(order.popleft()[0])
        return False

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._order)

    # -- partitions -----------------------------------------------------------------------------------
    def partitions(self) -> set[int]:
        return {p for _, p in self._order if p != UNATTRIBUTED}

    def export_partition(self, partition: int) -> list[str]:
        """The ids from ``partition``, oldest first."""
        return [i for i, p in self._order if p == partition]

    def drop_partition(self, partition: int) -> None:
        kept = deque((i, p) for i, p in self._order if p != partition)
        self._ids = {i for i, _ in kept}
        self._order = kept

    def load_partition(self, partition: int, ids: list[str]) -> None:
        for event_id in ids[-self.size:]:
            self.seen(event_id, partition)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "ids": [i for i, _ in self._order], "partitions": [p for _, p in self._order]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(self.size)  # type: ignore[misc]  # the configured size wins over the saved one
        ids = list(state["ids"])
        parts = list(state.get("partitions") or [UNATTRIBUTED] * len(ids))
        for event_id, partition in list(zip(ids, parts, strict=True))[-self.size:]:
            self.seen(event_id, int(partition))
