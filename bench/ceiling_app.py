"""The HTTP stack's ceiling: a bare FastAPI app that parses the same body and returns a constant."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Body(BaseModel):
    employed: int
    bank_balance: float
    annual_salary: float


@app.post("/api/v1/predict")
async def predict(body: Body) -> dict[str, object]:
    return {"success": True, "data": {"prediction": 0}, "message": "constant"}
