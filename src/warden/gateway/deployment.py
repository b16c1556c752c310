"""What the router can call: one model at one provider through one credential."""

from __future__ import annotations

from dataclasses import dataclass

from warden.gateway.catalog import Catalog, ModelInfo, ModelOverride


@dataclass(frozen=True, slots=True)
class Deployment:
    """One (credential, model) pair the router can call."""

    id: str  # "credential_id:model" (or "provider:model" without a credential): stable
    provider: str
    model: str
    credential_id: str | None
    info: ModelInfo

    @classmethod
    def build(
        cls,
        provider: str,
        model: str,
        credential_id: str | None = None,
        *,
        catalog: Catalog,
        overrides: ModelOverride | None = None,
    ) -> Deployment:
        return cls(
            id=f"{credential_id or provider}:{model}",
            provider=provider,
            model=model,
            credential_id=credential_id,
            info=catalog.model_info(provider, model, overrides),
        )

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"
