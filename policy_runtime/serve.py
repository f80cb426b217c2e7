"""`invoke serve BUNDLE`: the policy over HTTP (FastAPI), in physical units.

- ``POST /v1/predict`` with ``{"states": {"Ca": 8.5, ...}}`` -> ``{"action": {"dTc": -1.2}}``,
  or ``{"batch": [{...}, ...]}`` -> ``{"actions": [{...}, ...]}``;
- ``GET /v1/info``: the bundle's metadata; ``GET /healthz``: ``{"status": "ok"}``.

Bad input is a 422 whose ``detail`` names the field or the state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException

from policy_runtime.bundle import BundleError, Policy
from policy_runtime.schema import PredictRequest, PredictResponse


def create_app(bundle: Path | str) -> FastAPI:
    policy = Policy(bundle)
    app = FastAPI(title=f"aml-rl policy: {policy.metadata['sim']}", version=str(bundle))

    # async: inference takes tens of microseconds, less than a hop to a worker thread
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        return policy.metadata

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(request: PredictRequest) -> PredictResponse:
        try:
            if request.states is not None:
                return PredictResponse(action=policy.act(request.states))
            return PredictResponse(actions=policy.act_batch(request.batch or []))
        except BundleError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None

    return app


def serve(bundle: Path | str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    # no access log: a line per request costs more than the prediction
    uvicorn.run(create_app(bundle), host=host, port=port, log_level="info", access_log=False)
