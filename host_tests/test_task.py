"""What a model's outputs are (classify or regress), which the output-error metric of the planner and
the guard weighs: recorded in the checkpoint at training, a data set's, else assumed from the output
width; `generate --task` overrides it, the report says which, and the model folder keeps it so that
`verify` judges the same way."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_one_error, run_cli
from kan2mcu.check.verify import verify
from kan2mcu.generate import generate_model
from kan2mcu.model.importers import load_checkpoint
from kan2mcu.quant.output_error import is_classifier, task_of

HASHED = Path(__file__).parent / "fixtures" / "hashed"


def test_task_is_recorded_at_training_and_read_back(tmp_path):
    from kan2mcu.model.checkpoint import save_checkpoint
    from kan2mcu.model.torch_kan import KAN

    save_checkpoint(KAN([3, 4, 2]), tmp_path / "r.pt", dataset=None, input_transform=None, task="regress")
    save_checkpoint(KAN([3, 4, 2]), tmp_path / "n.pt", dataset=None, input_transform=None)
    recorded = load_checkpoint(tmp_path / "r.pt").model
    assert task_of(recorded) == ("regress", "recorded in the checkpoint") and not is_classifier(recorded)
    assert task_of(load_checkpoint(tmp_path / "n.pt").model) == ("classify", "assumed from the 2 output(s)")
    # a checkpoint that names its data set but not its task (older kan2mcu): the data set's
    assert task_of(load_checkpoint(HASHED / "digits.pt").model) == ("classify", "the digits data set")
    assert task_of(load_checkpoint(HASHED / "cancer.pt").model) == ("classify", "recorded in the checkpoint")


def test_generate_task_overrides_and_verify_agrees(small, tmp_path):
    """Three random outputs are not class scores: --task regress judges them by RMS error only (no
    argmax agreement); the bundle records it, so verify's guard figures are generate's."""
    checkpoint, calibration = small
    assumed = generate_model(checkpoint, tmp_path / "a", calibration=calibration, quiet=True, max_error=1.0)
    assert (assumed.report["model"]["task"], assumed.report["model"]["task_source"]) == (
        "classify", "assumed from the 3 output(s)")
    assert assumed.report["guard"]["argmax_agreement"] is not None
    given = generate_model(checkpoint, tmp_path / "r", calibration=calibration, quiet=True, max_error=1.0,
                           task="regress")
    assert (given.report["model"]["task"], given.report["model"]["task_source"]) == ("regress", "--task")
    assert given.report["guard"]["argmax_agreement"] is None
    assert "- task: regress (--task): the output error weighs RMS error" in (tmp_path / "r" / "report.md").read_text()
    assert verify(tmp_path / "r", calibration=calibration, quiet=True).guard == given.report["guard"]


def test_task_against_your_data_is_refused(capsys, tmp_path):
    status, err = run_cli(capsys, "generate", HASHED / "cancer.pt", "-o", tmp_path / "m", "--task", "regress", "-q")
    assert_one_error(status, err, "--task regress", "trained on your data as classify")
    assert not (tmp_path / "m").exists()
    status, err = run_cli(capsys, "generate", HASHED / "cancer.pt", "-o", tmp_path / "m", "--task", "cluster")
    assert status == 2 and "invalid choice: 'cluster'" in err


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_request_checks_the_task(tmp_path, task):
    from kan2mcu.errors import OptionError
    from kan2mcu.generate import GenerateRequest

    GenerateRequest(checkpoint=tmp_path / "x.pt", output=tmp_path / "o", task=task).check()
    with pytest.raises(OptionError, match="--task must be one of classify, regress"):
        GenerateRequest(checkpoint=tmp_path / "x.pt", output=tmp_path / "o", task=task[:4]).check()
