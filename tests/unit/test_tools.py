"""The test tools' readers of Ansible and Molecule output, on output as those print it."""

from __future__ import annotations

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
