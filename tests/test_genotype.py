"""The genotype contract: JSON round trip, file handling, and every validation error."""

from __future__ import annotations

import copy
import json

import pytest

from ggmnet.errors import UserError
from ggmnet.search_space.genotype import (
    BranchSpec,
    CellSpec,
    Genotype,
    GenotypeError,
    default_genotype,
    random_genotype,
)
from ggmnet.search_space.operations import CELL_OPS, DOWN_OPS


@pytest.fixture
def data() -> dict:
    """The JSON dictionary of a valid depth-6 genotype with nested provenance."""
    g = default_genotype(depth=6)
    d = g.to_dict()
    d["provenance"] = {"seed": 3, "config": {"lr": 0.01, "crops": [64, 64]}, "metrics": {"mIoU": 0.5},
                       "dataset_manifest_sha256": "ab" * 32, "created_utc": "2024-01-01T00:00:00+00:00"}
    return d


def test_round_trip_keeps_everything(data, tmp_path):
    g = Genotype.from_dict(data)
    assert g.provenance["config"]["crops"] == [64, 64]
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_json(g.to_json(indent=None)) == g
    path = g.save(tmp_path / "sub" / "genotype.json")
    assert json.loads(path.read_text())["format"] == "ggmnet-genotype"
    assert Genotype.load(path) == g
    assert g.to_dict() == data


def test_schema_field_values(data):
    g = Genotype.from_dict(data)
    assert g.depth == 6 and g.num_cells == 18
    assert g.branches[2].cells[4] == CellSpec(op="conv3x3", expansion=4, stride=32, residual=True, down="maxpool")
    assert g.downsample_layers(0) == [] and g.downsample_layers(1) == [2] and g.downsample_layers(2) == [2, 4]
    assert g.out_channels() == [48, 96, 192]


def test_lists_and_tuples_compare_equal():
    g = default_genotype(depth=3)
    rebuilt = Genotype(depth=3, num_classes=10, in_channels=3, stem_channels=[24, 48, 96],
                       unit_channels=[12, 24, 48], branches=[BranchSpec(b.output_stride, list(b.cells))
                                                             for b in g.branches],
                       provenance=dict(g.provenance))
    assert rebuilt == g


@pytest.mark.parametrize("depth", [2, 3, 16, 22, 24])
def test_default_genotype_validates_and_reaches_every_stride(depth):
    g = default_genotype(depth=depth).validate()
    assert [b.cells[-1].stride for b in g.branches] == [8, 16, 32]
    assert [len(g.downsample_layers(b)) for b in range(3)] == [0, 1, 2]


def test_summary_lists_every_layer():
    text = default_genotype(depth=5).summary()
    lines = text.splitlines()
    assert len(lines) == 2 + 5
    assert "branch 2/32" in lines[1]
    assert "[conv3x3_s2] zoomed_conv3x3 x4=96 /16 +r" in lines[3]  # layer 1 downsamples the 1/16 branch
    assert "[maxpool] zoomed_conv5x5 x4=192 /32 +r" in lines[5]


def _set_cell(d: dict, branch: int, layer: int, **changes) -> dict:
    d = copy.deepcopy(d)
    d["branches"][branch]["cells"][layer].update(changes)
    return d


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: _set_cell(d, 1, 4, op="conv7x7"),
     "branch 1/16, layer 4: unknown operator 'conv7x7' (expected one of skip, conv3x3, conv5x5, "
     "zoomed_conv3x3, zoomed_conv5x5)"),
    (lambda d: {**d, "depth": 7}, "branch 0/8: 6 cells, expected depth 7"),
    (lambda d: _set_cell(_set_cell(d, 2, 4, stride=16, down=None), 2, 5, stride=16),
     "branch 2/32: the last cell is at stride 16, the branch never reaches its output stride 32"),
    (lambda d: _set_cell(d, 1, 2, down=None), "branch 1/16, layer 2: stride doubles to 16 but down is missing"),
    (lambda d: _set_cell(d, 0, 3, down="maxpool"),
     "branch 0/8, layer 3: down 'maxpool' set but the stride stays 8"),
    (lambda d: _set_cell(d, 2, 2, down="avgpool"), "branch 2/32, layer 2: unknown downsampling operator 'avgpool'"),
    (lambda d: _set_cell(d, 0, 1, expansion=3), "branch 0/8, layer 1: expansion 3"),
    (lambda d: _set_cell(d, 0, 1, stride=12), "branch 0/8, layer 1: stride 12"),
    (lambda d: _set_cell(d, 1, 5, stride=8, down=None), "branch 1/16, layer 5: stride 8 after 16"),
    (lambda d: _set_cell(d, 0, 0, residual="yes"), "branch 0/8, layer 0: residual must be true or false"),
    (lambda d: _set_cell(d, 0, 0, kernel=3), "branch 0/8, layer 0: unknown key(s) kernel"),
    (lambda d: {**d, "branches": d["branches"][:2]}, "branch output strides are [8, 16]"),
    (lambda d: {**d, "branches": d["branches"][::-1]}, "branch output strides are [32, 16, 8]"),
    (lambda d: {**d, "format": "fasterseg-arch"}, "format is 'fasterseg-arch'"),
    (lambda d: {**d, "version": 2}, "version 2 is not supported"),
    (lambda d: {k: v for k, v in d.items() if k != "unit_channels"}, "missing key(s) unit_channels"),
    (lambda d: {**d, "stem_channels": [24, 48]}, "stem_channels must be 3 positive integers"),
    (lambda d: {**d, "num_classes": 0}, "num_classes must be a positive integer"),
    (lambda d: {**d, "provenance": [1]}, "provenance must be a JSON object"),
])
def test_each_rule_has_its_own_one_line_error(data, mutate, message):
    with pytest.raises(GenotypeError) as info:
        Genotype.from_dict(mutate(data))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_stride_jumping_two_levels_is_refused(data):
    d = _set_cell(_set_cell(data, 2, 2, down=None, stride=8), 2, 3, stride=32, down="maxpool")
    with pytest.raises(GenotypeError, match="layer 3: stride 32 after 8"):
        Genotype.from_dict(d)


def test_first_cell_may_already_downsample(data):
    d = copy.deepcopy(data)
    for layer in (0, 1):
        d = _set_cell(d, 1, layer, stride=16, down="conv3x3_s2" if layer == 0 else None)
    d = _set_cell(d, 1, 2, down=None)
    assert Genotype.from_dict(d).downsample_layers(1) == [0]


def test_validate_catches_a_hand_built_genotype():
    g = default_genotype(depth=4)
    bad = Genotype(depth=4, num_classes=10, in_channels=3, stem_channels=g.stem_channels,
                   unit_channels=g.unit_channels,
                   branches=(g.branches[0], BranchSpec(16, g.branches[0].cells), g.branches[2]))
    with pytest.raises(GenotypeError, match="branch 1/16: the last cell is at stride 8"):
        bad.validate()
    with pytest.raises(GenotypeError):
        bad.save("/nonexistent-never-written.json")


def test_malformed_json_and_files(tmp_path):
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("{\"format\": ")
    with pytest.raises(GenotypeError, match="expected a JSON object"):
        Genotype.from_json("[1, 2]")
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError, match=f"{missing}: no such file"):
        Genotype.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(GenotypeError, match=f"^{broken}: not valid JSON"):
        Genotype.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**default_genotype(depth=3).to_dict(), "depth": 4}))
    with pytest.raises(GenotypeError, match=f"^{wrong}: branch 0/8: 3 cells, expected depth 4$"):
        Genotype.load(wrong)


def test_save_never_leaves_a_half_file(tmp_path):
    path = tmp_path / "g.json"
    default_genotype(depth=3).save(path)
    before = path.read_text()
    g = Genotype(**{**default_genotype(depth=3).__dict__, "provenance": {"x": object()}})
    with pytest.raises(TypeError):
        g.save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]


def test_random_genotypes_cover_the_space_and_validate():
    gs = [random_genotype(5, seed=s) for s in range(40)]
    assert all(Genotype.from_json(g.to_json()) == g for g in gs)
    assert {c.op for g in gs for b in g.branches for c in b.cells} == set(CELL_OPS)
    assert {c.down for g in gs for b in g.branches for c in b.cells} == {None, *DOWN_OPS}
    assert {g.downsample_layers(1)[0] for g in gs} == set(range(5))
    assert random_genotype(5, seed=7) == random_genotype(5, seed=7) != random_genotype(5, seed=8)
