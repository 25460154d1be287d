from __future__ import annotations

import medbatch


def test_all_matches_public_names() -> None:
    public = {name for name in dir(medbatch) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(medbatch, name)).__name__ == "module"}
    assert set(medbatch.__all__) - {"__version__"} == public - modules


def test_every_export_has_a_docstring() -> None:
    for name in medbatch.__all__:
        obj = getattr(medbatch, name)
        if callable(obj):
            assert obj.__doc__, f"medbatch.{name} has no docstring"
