"""Configuration errors through the CLI name the key the user wrote, whatever it is called."""

from __future__ import annotations

import pytest

from biomarkers.cli import main


@pytest.mark.parametrize("key", ["sise", "set", "str", "none", "QcSettings"])
def test_unknown_qc_key_is_named_even_when_it_looks_like_a_type_name(tmp_path, capsys, key):
    # a typo'd key that happens to equal a type or model name (which pydantic also puts in error
    # locations, as union branches) must still be named, not reported as "<root>"
    cfg = tmp_path / "qc.yaml"
    cfg.write_text(f"qc:\n  {key}: 1\n")
    assert main(["qc", str(tmp_path), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: qc: {key}: unknown key" in err, err
    assert "<root>" not in err
