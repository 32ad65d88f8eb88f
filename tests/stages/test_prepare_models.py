"""`prepare-models`: one record per role; further judges live in the judge's record (so the judging
stages, which depend on it, rerun when one changes) and are checked offline like every role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from charforge.stages import prepare_models


def write_params(root: Path, model: Path, judges: list[dict]) -> Path:
    role = {"backend": "transformers", "model": str(model)}
    params = {"models": {"student": role, "teacher": role, "judge": role, "judges": judges}}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def test_further_judges_are_checked_and_recorded_with_the_judge(
    tmp_path: Path, tiny_model_with_stops: Path
) -> None:
    params = write_params(tmp_path, tiny_model_with_stops, [])
    prepare_models.run(params, tmp_path)
    alone = (tmp_path / "models/roles/judge.json").read_text()
    assert "further_judges" not in json.loads(alone)  # no judges: the record is what it always was

    other = tmp_path / "other-judge"
    other.symlink_to(tiny_model_with_stops, target_is_directory=True)
    params = write_params(tmp_path, tiny_model_with_stops, [{"backend": "transformers", "model": str(other)}])
    prepare_models.run(params, tmp_path)
    record = json.loads((tmp_path / "models/roles/judge.json").read_text())
    assert [judge["model"] for judge in record["further_judges"]] == [str(other)]

    params = write_params(
        tmp_path, tiny_model_with_stops, [{"backend": "transformers", "model": str(tmp_path / "gone")}]
    )
    with pytest.raises(prepare_models.ModelNotAvailable, match=r"models\.judges\.0 \(transformers: "):
        prepare_models.run(params, tmp_path)


def test_a_judge_listed_twice_is_refused(tmp_path: Path, tiny_model_with_stops: Path) -> None:
    from charforge.params import ParamsError

    params = write_params(
        tmp_path, tiny_model_with_stops, [{"backend": "transformers", "model": str(tiny_model_with_stops)}]
    )
    with pytest.raises(ParamsError, match="listed twice"):
        prepare_models.run(params, tmp_path)
