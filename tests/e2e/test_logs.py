"""Log lines of the real API and worker processes: JSON by default, one object a line, a job's id on its lines."""

import json
from pathlib import Path
from typing import Any

from tests.helpers import NOISE, SLOW_SAMPLE, TEST_KEYS, client_for, finish, running_stack, submit, wait_until


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each of which must be one JSON object with the fields every line has."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"{path.name} is empty"
    for line in lines:
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= line.keys(), line
    return lines


def test_every_line_is_json_and_a_jobs_lines_carry_its_id(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path) as stack, client_for(stack, TEST_KEYS[-61]) as c:
        done = submit(c, NOISE).json()
        assert done["status"] == "succeeded", done
        slow = c.post("/v1/jobs", json=SLOW_SAMPLE).json()
        wait_until(lambda: c.get(f"/v1/jobs/{slow['id']}").json()["status"] == "running", 60, "the slow job to run")
        assert c.delete(f"/v1/jobs/{slow['id']}").status_code == 202
        assert finish(c, slow["id"], 60)["status"] == "canceled"

        def logged() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return json_lines(stack.log_dir / "worker-0.log"), json_lines(stack.log_dir / "api.log")

        wait_until(lambda: any(f"job={slow['id']} canceled" in w["message"] for w in logged()[0]), 10, "the log")
        worker, api = logged()

    for job_id in (done["id"], slow["id"]):
        about = [line for line in worker if f"job={job_id}" in line["message"]]
        assert len(about) >= 2, worker  # it began, it ended
        assert all(line.get("job_id") == job_id for line in about), about
    assert any(line["message"].startswith("job=") and line["logger"] == "worker.tasks" for line in worker)
    assert any(line["logger"].startswith("rq.") and line.get("job_id") == done["id"] for line in worker)
    cancel = [line for line in api if "cancel requested" in line["message"]]
    assert [line.get("job_id") for line in cancel] == [slow["id"]], cancel
    assert any(line["logger"].startswith("uvicorn") for line in api)  # uvicorn's own lines are JSON too
    assert all("job_id" not in line for line in api if line["logger"].startswith("uvicorn"))
    assert not any("color_message" in line for line in api)  # uvicorn's copy of a message with terminal colours


def test_log_format_text_is_for_people(redis_url, tmp_path):
    with running_stack(redis_url, tmp_path, workers=0, LOG_FORMAT="text") as stack:
        text = (stack.log_dir / "api.log").read_text()
    assert "Application startup complete" in text
    assert not any(line.startswith("{") for line in text.splitlines())
