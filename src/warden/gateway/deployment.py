"""What the router can call: one model at one provider through one credential."""

from __future__ import annotations

from dataclasses import dataclass, field

from warden.gateway.catalog import Catalog, ModelInfo, ModelOverride


@dataclass(frozen=True, slots=True)
class Deployment:
    """One (credential, model) pair the router can call."""

    id: str  # "credential_id:model" (or "provider:model" without a credential): stable
    provider: str
    model: str
    credential_id: str | None
    info: ModelInfo
    # The names a bare model id matches it by: its model, lowercased, and the part after
    # its last "/" ("meta-llama/llama-3-70b" is "llama-3-70b" too). Set once: routing
    # checks every deployment of a workspace against the requested name.
    bare_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        model = self.model.lower()
        object.__setattr__(self, "bare_names", frozenset({model, model.rsplit("/", 1)[-1]}))

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
