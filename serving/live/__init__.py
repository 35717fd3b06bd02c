"""The API's live state: recent 5-minute windows per sensor, fed and rebuilt from Kafka."""

from serving.live.consumer import LiveConsumer
from serving.live.state import LiveStats, LiveWindows, WindowSnapshot

__all__ = ["LiveConsumer", "LiveStats", "LiveWindows", "WindowSnapshot"]
