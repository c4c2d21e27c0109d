"""Model ids: what clients may ask for, what runs it, and the /v1/models listing."""

from __future__ import annotations

from datetime import datetime, timezone

from anyclaude.config import Settings
from anyclaude.errors import NotFound


class Catalog:
    def __init__(self, settings: Settings, *, created_at: datetime | None = None):
        self.settings = settings
        stamp = created_at or datetime.now(timezone.utc)
        self.created_at = stamp.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def resolve(self, requested: str) -> str:
        """The local model id for a requested id.

        Claude ids route to the default model (haiku ids to the small one when set), so
        Claude Code works unchanged; configured local ids are themselves; anything else is
        a 404 whose message contains ``model:`` (Claude Code then tries its fallback model).
        """
        models, routes = self.settings.models, self.settings.routes
        if requested in models:
            return requested
        if requested.startswith("claude-"):
            if "haiku" in requested and routes.small:
                return routes.small
            return routes.default
        raise NotFound(f"model: {requested} is not available here; configured models: "
                       f"{', '.join(models)} (claude-* ids are routed to {routes.default})")

    def info(self, model_id: str) -> dict:
        cfg = self.settings.models.get(model_id)
        if cfg is None:
            raise NotFound(f"model: {model_id} is not a configured model; configured models: "
                           f"{', '.join(self.settings.models)}")
        return {"type": "model", "id": model_id, "display_name": cfg.display_name or model_id,
                "created_at": self.created_at, "lifecycle": "active",
                "max_input_tokens": cfg.context_window or None, "max_tokens": cfg.max_output_tokens}

    def listing(self) -> dict:
        data = [self.info(model_id) for model_id in self.settings.models]
        return {"data": data, "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
