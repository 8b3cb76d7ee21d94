"""Instance masks from one point per object: baselines, metrics, a piece per point.

Array-level only: this package may import :mod:`geosparse.io` but none of the
data modules, tasks, inference or CLI.
"""

from .baselines import (
    EDGE_WEIGHT,
    edge_cost,
    geodesic_distance,
    geodesic_instances,
    geodesic_point_distances,
    margin_uncertainty,
    transport_instances,
    voronoi_instances,
)
from .components import point_components
from .metrics import instance_scores

__all__ = [
    'EDGE_WEIGHT',
    'edge_cost',
    'geodesic_distance',
    'geodesic_instances',
    'geodesic_point_distances',
    'instance_scores',
    'margin_uncertainty',
    'point_components',
    'transport_instances',
    'voronoi_instances',
]
