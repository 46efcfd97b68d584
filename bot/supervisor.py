"""Supervisor dashboard (work in progress)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["supervisor"])
