"""One list_cases() for every layout, 2D and 3D (issue 11)."""

from __future__ import annotations

import pytest

from mambaseg.data.cases import is_2d_layout, list_cases
from mambaseg.data.records import Case2D, Case3D
from mambaseg.data.synthetic import write_phantom_msd, write_synthetic_drive


def test_list_cases_2d_and_3d(tmp_path):
    drive = write_synthetic_drive(tmp_path / "drive", n_train=3, n_test=2, size=(32, 32))
    train, test = list_cases(drive, "drive"), list_cases(drive, "drive", "test")
    assert len(train) == 3 and len(test) == 2 and all(isinstance(c, Case2D) for c in train + test)
    assert [c.id for c in list_cases(drive, "drive", "training")] == [c.id for c in train]
    msd = write_phantom_msd(tmp_path / "task", n_cases=2, shape=(8, 9, 7))
    cases = list_cases(msd, "msd")
    assert len(cases) == 2 and all(isinstance(c, Case3D) and c.label is not None for c in cases)
    assert is_2d_layout("drive") and is_2d_layout("folder2d") and not is_2d_layout("msd", msd)
    with pytest.raises(ValueError, match="split must be train"):
        list_cases(drive, "drive", "validation")
