"""The test tools: the readers of Ansible and Molecule output, on output as those print it,
and the load generator's pace, against a server on loopback."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools.loadgen import Load
from tools.playbook import changed_tasks
from tools.run_scenarios import failure_report

PLAYBOOK_OUTPUT = """\
TASK [fastapi_ops.stack.patroni : Patch the dynamic configuration] *************
changed: [pg1]
ok: [pg2]

TASK [fastapi_ops.stack.redis : Ask Sentinel for the master] *******************
ok: [pg1]
ok: [pg2]

RUNNING HANDLER [fastapi_ops.stack.patroni : Reload Patroni] *******************
changed: [pg2]
changed: [pg3 -> pg1(198.18.0.10)]
changed: [pg1] => (item=postgresql)
"""


def test_changed_tasks_names_each_changed_task_and_its_hosts():
    assert changed_tasks(PLAYBOOK_OUTPUT) == {
        "fastapi_ops.stack.patroni : Patch the dynamic configuration": {"pg1"},
        "fastapi_ops.stack.patroni : Reload Patroni": {"pg1", "pg2", "pg3"},
    }


def test_failure_report_keeps_the_result_after_a_fatal_line(tmp_path):
    log = tmp_path / "molecule-x.log"
    log.write_text(
        "  │ TASK [fastapi_ops.stack.app : Start the app]\n"
        "  │ fatal: [cl-app1]: FAILED! => \n"
        "  │   changed: false\n"
        "  │   msg: 'Unable to start service app: Job failed (219/CGROUP)'\n"
        "  │ PLAY RECAP\n"
    )
    report = failure_report(log)
    assert report[:3] == [
        "fatal: [cl-app1]: FAILED! => ",
        "  changed: false",
        "  msg: 'Unable to start service app: Job failed (219/CGROUP)'",
    ]


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator's connections are
    disable_nagle_algorithm = True  # the body must not wait for the headers' ACK

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_load_with_a_rate_sends_at_that_rate_and_without_one_as_fast_as_answered(loopback_url):
    paced = Load([loopback_url], connections=4, duration=2, rate=25).start().wait()
    assert paced.bad == 0, paced.summary()
    assert 40 <= paced.sent <= 55, paced.summary()  # 25 a second for 2 s
    unpaced = Load([loopback_url], connections=4, duration=2).start().wait()
    assert unpaced.bad == 0 and unpaced.sent > 4 * paced.sent, unpaced.summary()


def test_load_refuses_a_rate_that_is_not_positive(loopback_url):
    with pytest.raises(ValueError, match="rate must be above 0"):
        Load([loopback_url], rate=0)
