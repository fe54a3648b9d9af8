"""List pagination with bounds the OpenAPI document states (ninja's default leaves ``limit`` and
``offset`` unbounded, and an offset past a bigint was a 500 on PostgreSQL)."""

from __future__ import annotations

from ninja import Field, Schema
from ninja.pagination import LimitOffsetPagination

from lashops.core.validation import BIGINT_MAX

MAX_PAGE = 1000


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    class Input(Schema):
        limit: int = Field(100, ge=1, le=MAX_PAGE, description=f"Items per page (1 to {MAX_PAGE}).")
        offset: int = Field(0, ge=0, le=BIGINT_MAX, description="Items to skip.")

    def __init__(self, **kwargs) -> None:
        super().__init__(max_limit=MAX_PAGE, **kwargs)
