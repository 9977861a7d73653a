"""A 500 tells the client nothing of the exception: a generic message with a request id, and
the traceback in the server log under that id (a real server, raw HTTP)."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path

from _serving import _save, add_model, start_server

# The configuration lists an output the ONNX graph does not have: serving it fails inside
# the server with an unexpected error (a KeyError), not a servekit error.
MISCONFIGURED = """name: "misconfigured"
platform: "onnxruntime_onnx"
max_batch_size: 0
input { name: "x" data_type: TYPE_FP32 dims: [-1, 4] }
output { name: "y" data_type: TYPE_FP32 dims: [-1, 4] }
output { name: "secret_output_name" data_type: TYPE_FP32 dims: [-1, 4] }
"""

BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.0] * 4}]}
).encode()


def post(url: str, path: str) -> tuple[int, dict]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", path, body=BODY)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_500_is_generic_with_a_request_id_and_the_log_has_the_traceback(tmp_path: Path):
    _save(add_model(1.0), tmp_path / "misconfigured" / "1" / "model.onnx")
    (tmp_path / "misconfigured" / "config.pbtxt").write_text(MISCONFIGURED)
    _save(add_model(2.0), tmp_path / "fine" / "1" / "model.onnx")
    server = start_server("--model-repo", str(tmp_path))
    try:
        status, body = post(server.url, "/v2/models/misconfigured/infer")
        assert status == 500
        match = re.fullmatch(
            r"internal error \(request id ([0-9a-f]{32}); the server log has the details\)",
            body["error"],
        )
        assert match, body
        assert "secret_output_name" not in body["error"] and "KeyError" not in body["error"]
        request_id = match[1]
        log = ""
        deadline = time.monotonic() + 30
        while "secret_output_name" not in log and time.monotonic() < deadline:
            log += server.stderr_text()
            time.sleep(0.05)
        assert f"internal error, request id {request_id}" in log
        assert "Traceback" in log and "KeyError: 'secret_output_name'" in log
        status, body = post(server.url, "/v2/models/fine/infer")  # still serving
        assert status == 200 and body["outputs"][0]["data"] == [2.0] * 4
    finally:
        assert server.stop() == 0
