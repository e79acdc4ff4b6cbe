"""``make demo`` end to end at micro scale: every step runs and leaves the files its closing message points to."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import demo


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--cases", "10", "--epochs", "1"]) == 0
    run = tmp_path / "ap"
    assert (run / "models" / "model.pt").is_file()
    summary = pd.read_csv(run / "eval" / "summary.csv")
    assert set(summary["structure"]) == {"Ap_Vertebra", "Ap_Pedicle", "Ap_Spinous_Process"}
    assert summary["Dice"].between(0, 1).all()
    assert list((run / "predictions").rglob("Ap_Vertebra.png"))
    assert pd.read_csv(tmp_path / "measure" / "measure.csv").shape[0] > 0
    assert (tmp_path / "report.html").stat().st_size > 0
    assert "done in" in capsys.readouterr().out
