"""Task streams (scenarios) over real data sets."""

from impresslearn.data import ImageData
from impresslearn.scenarios import mnist, split  # noqa: F401  (registers the scenarios)
from impresslearn.scenarios.base import SCENARIOS, Scenario, ScenarioConfig, TaskData


def build_scenario(config: ScenarioConfig, data: ImageData) -> Scenario:
    """The scenario ``config.name`` over the loaded data set ``data``."""
    return SCENARIOS.get(config.name)(config, data)


__all__ = ["SCENARIOS", "Scenario", "ScenarioConfig", "TaskData", "build_scenario"]
