"""Request and response bodies. Input constraints are JSON Schema keywords wherever the
validator can enforce them, so the OpenAPI schema refuses what the validator refuses."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

# PostgreSQL cannot store NUL in text. Lone surrogates (not Unicode, no UTF-8 form) never
# get this far: pydantic refuses them as "string_unicode".
SafeText = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]

# A label is stored without the blanks around it, so it must hold something else. The set is
# spelled out (not \s, which Python, Rust and JSON Schema regexes each define differently).
_BLANKS = " \t\n\r\v\f"
_LABEL_PATTERN = r"^[^\x00]*[^\x00 \t\n\r\v\f][^\x00]*$"
# Lengths count the input as sent, as the schema's maxLength does.
_Stripped = AfterValidator(lambda value: value.strip(_BLANKS))
Sku = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=_LABEL_PATTERN), _Stripped
]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=_LABEL_PATTERN), _Stripped
]
Category = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=_LABEL_PATTERN), _Stripped
]
Description = Annotated[SafeText, Field(max_length=10_000)]

# numeric(12, 2): a number, or a decimal string without sign, exponent, blanks or NaN.
_PRICE_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,2})?$"
_PRICE_MAX = 9_999_999_999.99


def _price_string(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(_PRICE_PATTERN, value):
        raise PydanticCustomError(
            "price_format", "a price string is digits with up to 2 decimals, e.g. '9.99'"
        )
    return value


Price = Annotated[
    Decimal,
    Field(ge=0, max_digits=12, decimal_places=2),
    BeforeValidator(_price_string),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": _PRICE_MAX, "multipleOf": 0.01},
                {"type": "string", "pattern": _PRICE_PATTERN},
            ]
        }
    ),
]


def _json_integer(value: object) -> object:
    # JSON Schema's integer: 5 and 5.0, not true or "5", which pydantic's lax mode takes.
    if isinstance(value, bool | str):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Stock = Annotated[int, Field(ge=0, le=2_147_483_647), BeforeValidator(_json_integer)]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    description: Description | None = None
    category: Category
    price: Price
    stock: Stock = 0


def _no_defaults(schema: dict[str, Any]) -> None:
    # A field left out is absent, not null (in a PATCH: unchanged): the schema shows no
    # default. Only a product's description takes null.
    for name, prop in schema["properties"].items():
        if name != "description":
            prop.pop("default", None)


class ProductUpdate(BaseModel):
    """PATCH body: only the fields sent are changed. Field(None) marks a field left out;
    the types have no None, so an explicit null is refused (but for description)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_defaults)

    sku: Sku = Field(None)
    name: Name = Field(None)
    description: Description | None = None
    category: Category = Field(None)
    price: Price = Field(None)
    stock: Stock = Field(None)


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


class ReadinessOut(BaseModel):
    """`checks` and `failing` only for clients in HEALTH_DETAIL_NETWORKS."""

    model_config = ConfigDict(json_schema_extra=_no_defaults)

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(None)
    failing: list[str] = Field(None)


class ErrorOut(BaseModel):
    detail: str
