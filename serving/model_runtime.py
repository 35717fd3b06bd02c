"""The model the API serves: loaded from the registry's `latest` at start and on a short poll,
swapped by replacing one reference. A request reads that reference once and keeps the bundle
it got, so a swap never fails or mixes versions within a request."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from traffic_core.model_bundle import BundleError, ModelBundle
from traffic_core.registry import ModelRegistry

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(self, registry: ModelRegistry, poll_seconds: float = 2.0) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self._current: ModelBundle | None = None
        self._failed: dict[str, str] = {}
        self._listeners: list[Callable[[ModelBundle], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    @property
    def current(self) -> ModelBundle | None:
        return self._current

    def reason(self) -> str | None:
        """Why no model is served, or None when one is."""
        if self._current is not None:
            return None
        latest = self.registry.latest()
        if latest is None:
            return f"no model registered yet in {self.registry.root}: run the retrain job"
        return f"model {latest} cannot be served: {self._failed.get(latest, 'loading')}"

    def on_swap(self, listener: Callable[[ModelBundle], None]) -> None:
        self._listeners.append(listener)

    def refresh(self, force: bool = False) -> bool:
        """Load `latest` if it is not the served version; True when a new one was swapped in.
        A version that fails verification is skipped until `latest` moves (or `force`)."""
        with self._lock:
            latest = self.registry.latest()
            current = self._current
            if latest is None or (current is not None and current.version == latest):
                return False
            if latest in self._failed and not force:
                return False
            try:
                bundle = ModelBundle.load(self.registry, latest)
            except (BundleError, OSError, ValueError) as error:
                self._failed[latest] = str(error)
                log.error("model %s not served: %s", latest, error)
                return False
            self._current = bundle
            self.swaps += 1
        log.info("serving model %s", bundle.version)
        for listener in self._listeners:
            try:
                listener(bundle)
            except Exception:
                log.exception("model swap listener failed")
        return True

    def start(self) -> None:
        self.refresh()
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("model poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
