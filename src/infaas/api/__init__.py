"""HTTP API: FastAPI app factory, control-plane and data-plane routers."""
