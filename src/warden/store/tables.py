"""Every table module, imported so ``metadata`` (Alembic's target) holds them all."""

from __future__ import annotations

from warden.store import agent_models, budget_models, governance_models, memory_models, models
from warden.store import response_models
from warden.store import console_models
from warden.store import webhook_models
from warden.store import mcp_models
from warden.store import gate_models
from warden.store.base import Base

metadata = Base.metadata
MODULES = (models, agent_models, budget_models, governance_models, memory_models, response_models,
           console_models, webhook_models, mcp_models, gate_models)
