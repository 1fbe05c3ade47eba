import pytest

from deploykit.errors import DeployKitError
from deploykit.registry import Registry


def test_unknown_name_lists_valid_names_and_suggests():
    reg: Registry[int] = Registry("criterion")
    reg.register("fisher", 1)
    reg.register("l1", 2)
    with pytest.raises(DeployKitError) as e:
        reg.get("fishr")
    msg = str(e.value)
    assert "unknown criterion 'fishr'" in msg
    assert "did you mean 'fisher'" in msg
    assert "valid: fisher, l1" in msg


def test_register_decorator_wildcards_and_duplicates():
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    def alpha():
        return "a"

    reg.register("beta", 2)
    assert reg.get("alpha") is alpha
    assert reg.names("a*") == ["alpha"]
    assert "beta" in reg and len(reg) == 2
    with pytest.raises(ValueError):
        reg.register("beta", 3)
