"""streamwatch: a production monitor for machine-learning models, fed by Kafka.

The pipeline is drawn in :mod:`streamwatch.app`.
"""

from streamwatch.config import Settings, load_settings
from streamwatch.errors import ConfigError, StreamwatchError

__version__ = "0.1.0"

__all__ = ["ConfigError", "Settings", "StreamwatchError", "__version__", "load_settings"]
