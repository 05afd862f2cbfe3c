"""An opt-in strategy (ANSIBLE_STRATEGY=mitogen_or_linear): Mitogen's linear strategy
when the mitogen package is installed, else Ansible's own linear strategy.

Mitogen keeps one Python interpreter per host open for the whole run and sends it the
modules it has not seen yet, instead of a new SSH command and interpreter per task. On
two quiet lab machines site.yml took 0.6 of the time and of the CPU of the linear
strategy; in CI, with another scenario on the same 2 cores, the converges took as long
as with it (bench/RESULTS.md, section 3), so it is not the default.
"""

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError:
    from ansible.plugins.strategy.linear import StrategyModule

__all__ = ["StrategyModule"]
