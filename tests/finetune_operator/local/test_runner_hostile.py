"""One real `finetune run --local` (2 ranks) fed with every bad row of the messages-format
bad-data corpus under onError: skip, with HF_TOKEN planted in its environment and shell
metacharacters in the model name, the data path and the output path.

- every bad row is counted in training_summary.json under its reason, over-long rows too,
  and rows read = rows trained + rows skipped;
- the token value appears nowhere: not in stdout/stderr, not in any file of the output
  directory (logs, trainer config, summary, checkpoints, model);
- no shell ever sees user text: the metacharacters run nothing, and every process of the run
  gets the config path as one argv element.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from finetune_contract.datarows import JSON_WHITESPACE

from tests.conftest import ROOT
from tests.support.bad_data import CORPUS, MANIFEST, assert_counted
from tests.support.local_run import finetune_command, write_job

GOOD_ROWS = 160
MAX_STEPS = 4
TOKEN = "hf_" + secrets.token_hex(16)  # planted: must never be written anywhere
# If a shell ever interpreted them, these would create files named PWNED*.
DATA_FILE = "my data; touch PWNED_DATA $(id).jsonl"
OUTPUT_DIR = "out dir; touch PWNED_OUT && echo $(id) > PWNED_ECHO"


def _training_lines() -> tuple[list[bytes], dict[str, int]]:
    """Good example rows with every bad row of the messages-format corpus mixed in, and the
    skips they must produce (the corpus files are copied whole, good rows and all)."""
    good = (ROOT / "examples" / "data" / "train.jsonl").read_bytes().splitlines()[:GOOD_ROWS]
    lines: list[bytes] = []
    expected: dict[str, int] = {}
    cases = [c for c in MANIFEST if c["format"] == "messages" and "skip" in c
             and c["file"].endswith(".jsonl")]
    # latin-1 bytes first: whatever reads the file as text meets them in its first chunk
    cases.sort(key=lambda c: c["file"] != "latin1.jsonl")
    for i, case in enumerate(cases):
        lines += _lines(CORPUS / case["file"])
        lines += good[i * 8:(i + 1) * 8]
        for fragment, count in case["skip"].items():
            expected[fragment] = expected.get(fragment, 0) + count
    lines += good[len(cases) * 8:]
    return lines, expected


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local-run")
    lines, expected = _training_lines()
    job = write_job(tmp / "job", max_steps=MAX_STEPS, save_steps=2, name="skip-and-secrets")
    (tmp / "job" / "data" / "train.jsonl").unlink()
    (tmp / "job" / "data" / DATA_FILE).write_bytes(b"\n".join(lines) + b"\n")
    doc = yaml.safe_load(job.read_text())
    doc["spec"]["dataset"]["train"]["path"] = f"data/{DATA_FILE}"
    doc["spec"]["dataset"]["onError"] = "skip"
    doc["spec"]["dataset"].pop("eval")  # the sample answer then reads the training file
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    output = tmp / OUTPUT_DIR
    env = {**os.environ, "HF_TOKEN": TOKEN}
    process = subprocess.Popen(finetune_command(job, output), cwd=tmp, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    argvs = _watch_argv(process, str(output / "trainer-config.yaml"))
    stdout, stderr = process.communicate(timeout=300)
    return {"tmp": tmp, "output": output, "returncode": process.returncode,
            "stdout": stdout, "stderr": stderr, "expected": expected, "argvs": argvs,
            "rows": len(lines)}


def _watch_argv(process: subprocess.Popen, marker: str) -> list[list[bytes]]:
    """argv of every live process mentioning `marker`, sampled while the run goes on."""
    seen: dict[int, list[bytes]] = {}
    while process.poll() is None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                raw = cmdline.read_bytes()
            except OSError:
                continue
            if marker.encode() in raw:
                seen[int(cmdline.parent.name)] = raw.rstrip(b"\0").split(b"\0")
        time.sleep(0.5)
    return list(seen.values())


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_every_bad_row_is_skipped_and_counted(run):
    assert run["returncode"] == 0, run["stdout"].decode() + run["stderr"].decode()
    summary = json.loads((run["output"] / "training_summary.json").read_text())
    data = summary["data"]
    expected = dict(run["expected"])
    expected["no trained token within the first"] = 2  # over-long.jsonl's rows
    assert sum(data["read"].values()) == run["rows"] - _blank(run)
    assert_counted(data, expected)
    assert summary["steps"] == MAX_STEPS
    assert "skipped" in run["stdout"].decode()  # the user is told, not only the summary


def _lines(path: Path) -> list[bytes]:
    """The file's lines as the trainer splits them: at b"\n" only (a bare b"\r" stays inside
    its line, as in cr-joined.jsonl; CRLF lines keep their b"\r")."""
    return path.read_bytes().removesuffix(b"\n").split(b"\n")


def _blank(run) -> int:
    path = run["tmp"] / "job" / "data" / DATA_FILE
    return sum(1 for line in _lines(path) if not line.strip(JSON_WHITESPACE.encode()))


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_planted_hf_token_appears_nowhere(run):
    assert run["returncode"] == 0, run["stderr"].decode()
    token = TOKEN.encode()
    assert token not in run["stdout"] and token not in run["stderr"]
    scanned = 0
    for path in run["output"].rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
            scanned += 1
    assert scanned > 10  # logs, config, summary, checkpoints and the final model


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.distributed
def test_shell_metacharacters_reach_no_shell(run):
    assert run["returncode"] == 0, run["stderr"].decode()
    pwned = [p for p in run["tmp"].rglob("PWNED*")] + list(Path.cwd().glob("PWNED*"))
    assert pwned == []
    config = yaml.safe_load((run["output"] / "trainer-config.yaml").read_text())
    assert config["spec"]["dataset"]["train"]["path"] == f"data/{DATA_FILE}"  # verbatim, data
    config_path = str(run["output"] / "trainer-config.yaml").encode()
    # torchrun and both ranks (at least) were seen; each got the path as one element
    assert len(run["argvs"]) >= 3, run["argvs"]
    for argv in run["argvs"]:
        assert argv[argv.index(config_path) - 1] == b"--config", argv
