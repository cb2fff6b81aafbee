"""A bounded window of recently seen event ids: the same id again within it is a duplicate."""

from __future__ import annotations

from collections import deque
from typing import Any


class DedupWindow:
    """Remembers the last ``size`` distinct event ids (O(1) per check; checkpointed with the model)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` is in the window; otherwise remember it and return False."""
        if event_id in self._ids:
            return True
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        return False

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._order)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "ids": list(self._order)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(self.size)  # type: ignore[misc]  # the configured size wins over the saved one
        for event_id in list(state["ids"])[-self.size:]:
            self.seen(event_id)
