"""Root conftest: test-session settings shared by the project's own tests."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
