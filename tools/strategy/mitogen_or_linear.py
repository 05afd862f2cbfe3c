"""The controller's strategy (ansible.cfg): Mitogen's linear strategy when the mitogen
package is installed, else Ansible's own linear strategy.

Mitogen keeps one Python interpreter per host open for the whole run and sends it the
modules it has not seen yet, instead of a new SSH command and interpreter per task: a
no-op site.yml ran 2.6x faster on the lab (bench/RESULTS.md, section 3). Run with
ANSIBLE_STRATEGY=linear to leave it out.
"""

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule

__all__ = ["StrategyModule"]
