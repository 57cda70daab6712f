"""Root conftest: test-session settings shared by the project's own tests.

It also registers the maskbench audit plugin (``pytest --model resnet18`` runs the
audit) in a checkout where the ``pytest11`` entry point is not installed or plugin
autoloading is off (PYTEST_DISABLE_PLUGIN_AUTOLOAD). Two pitfalls shape how:

* registering it again when the entry point already loaded it would make pluggy refuse
  the duplicate (the same module under a second name), so it is registered only when it
  is not registered yet, and not when the user blocked it (``-p no:maskbench``);
* this file is also imported, late, when another project collects the audit module of
  an editable install (it lies below this directory), and pytest refuses
  ``pytest_plugins`` in a conftest imported after start-up. So no ``pytest_plugins``
  here: the plugin is registered from ``pytest_addoption``, which runs while this
  conftest is loaded at start-up, early enough for the plugin's options.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

AUDIT_PLUGIN = "maskbench.audit.plugin"
ENTRY_POINT_NAME = "maskbench"


def pytest_addoption(parser, pluginmanager):
    """Register the audit plugin unless the entry point did (or the user blocked it)."""
    loaded = sys.modules.get(AUDIT_PLUGIN)
    if loaded is not None and pluginmanager.is_registered(loaded):
        return
    if pluginmanager.is_blocked(ENTRY_POINT_NAME) or pluginmanager.is_blocked(AUDIT_PLUGIN):
        return
    pluginmanager.import_plugin(AUDIT_PLUGIN)
