"""Every shipped config and parameter file validates with the project's own loaders, and the IBSI
phantom checks take their settings from the shipped parameter files (one definition)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.relative_to(REPO).as_posix() for p in [*REPO.glob("configs/**/*.yaml"), *REPO.glob("experiments/*.yaml")])


def _load(rel: str):
    """The loader the project uses for this file (the CLI's / pipeline's own)."""
    path = REPO / rel
    if rel.startswith("configs/radiomics/"):
        from biomarkers.features.params import load_params

        return load_params(path)
    if rel.startswith("experiments/"):
        from biomarkers.modeling.spec import load_spec

        return load_spec(path)
    if rel in ("configs/pipeline.yaml", "configs/demo.yaml"):
        from biomarkers.pipeline.config import load_config

        return load_config(path)
    if rel == "configs/ingest.yaml":
        from biomarkers.config import load_yaml
        from biomarkers.dicom.settings import IngestSettings

        return load_yaml(path, IngestSettings)
    if rel == "configs/clinical_schema.yaml":
        from biomarkers.clinical.schema import load_schema

        return load_schema(path)
    if rel == "configs/release.yaml":
        from biomarkers.release.config import load_release_config

        return load_release_config(path)
    if rel == "configs/gateway.yaml":
        from biomarkers.intake import load_gateway_config

        return load_gateway_config(path)
    pytest.fail(f"{rel}: no loader known for this shipped file; add it to tests/test_shipped_configs.py")


def test_there_are_shipped_files():
    assert "configs/radiomics/ct.yaml" in SHIPPED and "experiments/demo.yaml" in SHIPPED


@pytest.mark.parametrize("rel", SHIPPED)
def test_shipped_file_validates(rel):
    assert _load(rel) is not None


def test_packaged_ibsi_parameter_files_are_the_configs_ones():
    """biomarkers/data/radiomics (read by the installed package) == configs/radiomics (users' copy), byte for byte."""
    from biomarkers.features.ibsi.reference import PARAMS, params_dir

    packaged = sorted(p.name for p in params_dir().glob("*.yaml"))
    assert set(PARAMS.values()) <= set(packaged)
    for name in packaged:
        assert (params_dir() / name).read_bytes() == (REPO / "configs" / "radiomics" / name).read_bytes(), name


def test_phantom_settings_are_the_parameter_files_ibsi_sections():
    from biomarkers.config import read_yaml
    from biomarkers.features.ibsi import reference, settings_from_params

    assert not hasattr(reference, "PHANTOM_SETTINGS")
    for dataset, name in reference.PARAMS.items():
        own = settings_from_params(read_yaml(REPO / "configs" / "radiomics" / name))
        assert settings_from_params(reference.phantom_params(dataset)) == own, dataset
    # configuration B: in-plane 2 x 2 mm, slices kept at the phantom's 3 mm (IBSI 1 diagnostics: vox_dim_z_interp_img 3)
    b = settings_from_params(reference.phantom_params("config_B"))
    assert b.in_plane_only and tuple(b.spacing) == (2.0, 2.0, 3.0)


def test_phantom_check_follows_an_edited_parameter_file(tmp_path, monkeypatch, shared_data):
    """run_dataset computes what the parameter file says: drop 2D/2.5D aggregation, those tags disappear."""
    import yaml

    from biomarkers.features.ibsi import reference

    for name in reference.PARAMS.values():
        (tmp_path / name).write_bytes((reference.params_dir() / name).read_bytes())
    f = tmp_path / reference.PARAMS["digital_phantom"]
    params = yaml.safe_load(f.read_text())
    params["ibsi"]["aggregation"] = ["3D"]
    f.write_text(yaml.safe_dump(params))
    full = reference.run_dataset("digital_phantom", data_dir=shared_data, diagnostics=False)
    monkeypatch.setattr(reference, "params_dir", lambda: tmp_path)
    only3d = reference.run_dataset("digital_phantom", data_dir=shared_data, diagnostics=False)
    assert "cm_joint_max_2D_avg" in full and "cm_joint_max_2D_avg" not in only3d
    assert only3d["cm_joint_max_3D_avg"] == full["cm_joint_max_3D_avg"]
