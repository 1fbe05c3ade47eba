"""deploykit.lazy: a module imported on first attribute access, with one clear error when missing."""

from __future__ import annotations

import sys
import types

import pytest

from deploykit.errors import DeployKitError
from deploykit.lazy import MissingModuleError, lazy_import


def test_imports_on_first_attribute_access_only(monkeypatch):
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    mod = lazy_import("colorsys", install="(standard library)")
    assert "colorsys" not in sys.modules
    assert mod.rgb_to_hsv(1.0, 0.0, 0.0)[0] == 0.0
    assert "colorsys" in sys.modules and mod.available()


def test_missing_package_names_it_and_how_to_install_it():
    mod = lazy_import("deploykit_no_such_package", what="NoSuch", install="pip install nosuch")
    assert not mod.available()
    with pytest.raises(MissingModuleError) as e:
        mod.anything
    assert isinstance(e.value, DeployKitError) and isinstance(e.value, ImportError)
    assert str(e.value).startswith("NoSuch is not installed (") and str(e.value).endswith("; pip install nosuch")


def test_alternative_names_are_tried_in_order_and_fakes_are_seen_at_once(monkeypatch):
    mod = lazy_import("deploykit_no_such_package", "deploykit_fake_pkg", install="pip install fake")
    assert not mod.available()
    fake = types.ModuleType("deploykit_fake_pkg")
    fake.value = 3
    monkeypatch.setitem(sys.modules, "deploykit_fake_pkg", fake)
    assert mod.value == 3
