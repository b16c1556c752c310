"""What ``model: auto`` means for embeddings: one model, the cheapest.

Chat's ``auto`` ranks every model per request and follows live health; for
embeddings that would be wrong, because the vectors of two models are not
comparable (an index built with one cannot be searched with the other). So
``auto`` here names one model, chosen from the catalog alone: the cheapest
embedding model the workspace's keys serve whose price and quality are known
(ties: the better rated, then by name). Health and breakers never switch it;
failover stays among the deployments of that model (several keys or providers
serving the same model id) and the fallbacks the request names.
"""

from __future__ import annotations

from collections.abc import Sequence

from warden.gateway.deployment import Deployment


def auto_model(deployments: Sequence[Deployment]) -> str | None:
    """The model id ``auto`` stands for (as a bare id: every provider serving it); None
    if the workspace serves no priced, rated embedding model."""
    eligible = [d for d in deployments if d.info.described and d.info.has("embeddings")
                and d.info.input_rate is not None and d.info.quality is not None]
    if not eligible:
        return None
    best = min(eligible, key=lambda d: (d.info.input_rate, -(d.info.quality or 0.0), d.name))
    return best.model
