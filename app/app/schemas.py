from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Sku = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
Stock = Annotated[int, Field(ge=0, le=2_147_483_647)]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    description: str | None = Field(None, max_length=10_000)
    category: Category
    price: Price
    stock: Stock = 0


class ProductUpdate(BaseModel):
    """PATCH body: only the fields sent are changed; null is refused where not nullable."""

    model_config = ConfigDict(extra="forbid")

    sku: Sku | None = None
    name: Name | None = None
    description: str | None = Field(None, max_length=10_000)
    category: Category | None = None
    price: Price | None = None
    stock: Stock | None = None

    @model_validator(mode="after")
    def _no_null_for_required(self) -> ProductUpdate:
        nulls = [
            f for f in self.model_fields_set if f != "description" and getattr(self, f) is None
        ]
        if nulls:
            raise ValueError(f"may not be null: {', '.join(sorted(nulls))}")
        return self


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    description: str | None
    category: str
    price: Decimal
    stock: int
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    page: int
    page_size: int
    total: int


class VersionOut(BaseModel):
    name: str
    version: str
    release: str | None
