"""Products CRUD under the API prefix; reads are cached, writes invalidate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import require_write
from app.cache import Cache
from app.config import Settings
from app.db import dropping_a_dead_session, get_read_session, get_session, is_unavailable
from app.errors import responses
from app.lock import RedisLock
from app.models import Product
from app.schemas import ProductCreate, ProductOut, ProductPage, ProductUpdate, SafeText

# "function": the session commits (or fails, 503) before the response is sent.
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(get_read_session, scope="function")]
ProductId = Annotated[int, Path(ge=1, le=2**63 - 1)]
# Writes need a token granting products:write (app/auth.py); reads are public.
WRITE = [Depends(require_write)]
LIST_NAMESPACE = "products:list"


def item_namespace(product_id: int) -> str:
    return f"product:{product_id}"


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _cache(request: Request) -> Cache:
    return request.app.state.cache  # type: ignore[no-any-return]


def _cacheable(response: Response, settings: Settings) -> None:
    # Short: a reverse proxy cannot be told about invalidations.
    if settings.http_cache_max_age > 0:
        response.headers["Cache-Control"] = f"public, max-age={settings.http_cache_max_age}"
    else:
        response.headers["Cache-Control"] = "no-cache"


def _dump(product: Product) -> dict[str, Any]:
    return ProductOut.model_validate(product).model_dump(mode="json")


def _conflict(exc: IntegrityError) -> HTTPException:
    detail = "a product with this sku already exists"
    if "unique" not in str(exc.orig).lower():
        detail = "the change violates a database constraint"
    return HTTPException(status.HTTP_409_CONFLICT, detail)


async def _commit_and_invalidate(request: Request, session: AsyncSession, *namespaces: str) -> None:
    """Commit, then invalidate. Also when the commit's outcome is unknown (the connection
    died after COMMIT was sent): a needless invalidation only costs a cache miss."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _conflict(exc) from None
    except Exception:
        await _cache(request).invalidate(*namespaces)
        raise
    await _cache(request).invalidate(*namespaces)


async def create_product(
    body: ProductCreate, request: Request, response: Response, session: Session
) -> dict[str, Any]:
    product = Product(**body.model_dump())
    session.add(product)
    await _commit_and_invalidate(request, session, LIST_NAMESPACE)
    response.headers["Location"] = _location(request, product.id)
    return _dump(product)


def _location(request: Request, product_id: int) -> str:
    # Never from the request's Host header: PUBLIC_BASE_URL, else a path (RFC 9110 allows it).
    root_path: str = request.scope.get("root_path", "")
    path = str(request.app.url_path_for("get_product", product_id=product_id))
    return (_settings(request).public_base_url or "") + root_path + path


async def list_products(
    request: Request,
    response: Response,
    session: ReadSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    category: Annotated[SafeText | None, Query(min_length=1, max_length=64)] = None,
) -> Any:
    async def load() -> dict[str, Any]:
        filters = [Product.category == category] if category is not None else []
        total = await session.scalar(select(func.count()).select_from(Product).where(*filters))
        rows = await session.scalars(
            select(Product)
            .where(*filters)
            .order_by(Product.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        )
        return {
            "items": [_dump(p) for p in rows],
            "page": page,
            "page_size": page_size,
            "total": total or 0,
        }

    # The key holds exactly the validated query parameters, nothing else.
    params = f"category={category or ''}&page={page}&page_size={page_size}"
    value, _hit = await _cache(request).get_or_load(
        "product_list",
        LIST_NAMESPACE,
        params,
        _settings(request).cache_ttl_list,
        dropping_a_dead_session(session, load),
        look_again_after=is_unavailable,
    )
    _cacheable(response, _settings(request))
    return value


async def get_product(
    product_id: ProductId, request: Request, response: Response, session: ReadSession
) -> Any:
    async def load() -> dict[str, Any] | None:
        product = await session.get(Product, product_id)
        return _dump(product) if product is not None else None

    value, _hit = await _cache(request).get_or_load(
        "product",
        item_namespace(product_id),
        "v",
        _settings(request).cache_ttl_product,
        dropping_a_dead_session(session, load),
        look_again_after=is_unavailable,
    )
    if value is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "product not found")
    _cacheable(response, _settings(request))
    return value


def _lock(request: Request, product_id: int) -> RedisLock:
    settings = _settings(request)
    cache = _cache(request)
    return RedisLock(
        cache.redis,
        cache.key("lock", item_namespace(product_id)),
        timeout=settings.lock_timeout,
        wait=settings.lock_wait,
        replicas=settings.redis_lock_replicas,
        # WAIT's reply must arrive within the socket timeout.
        replica_timeout=settings.redis_socket_timeout / 2,
    )


async def _locked_write(request: Request, product_id: int, session: AsyncSession, body: Any) -> Any:
    """Update (body) or delete (None) under the product's lock, then invalidate."""
    lock = _lock(request, product_id)
    try:
        acquired = await lock.acquire()
    except (RedisError, OSError):
        # Without Redis the write could not invalidate the cache either. Also a lock
        # too few replicas acknowledged (LockNotReplicated is a RedisError).
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "writes are unavailable while Redis is unreachable",
            headers={"Retry-After": "5"},
        ) from None
    if not acquired:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the product is being modified by another request; retry",
            headers={"Retry-After": "1"},
        )
    try:
        product = await session.get(Product, product_id, with_for_update=True)
        if product is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "product not found")
        if body is None:
            await session.delete(product)
        else:
            for field, value in body.model_dump(exclude_unset=True).items():
                setattr(product, field, value)
        await _commit_and_invalidate(request, session, item_namespace(product_id), LIST_NAMESPACE)
        if body is not None:
            await session.refresh(product)
        return product
    finally:
        await lock.release_quietly()


async def update_product(
    product_id: ProductId, body: ProductUpdate, request: Request, session: Session
) -> Any:
    product = await _locked_write(request, product_id, session, body)
    return _dump(product)


async def delete_product(product_id: ProductId, request: Request, session: Session) -> Response:
    await _locked_write(request, product_id, session, None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def build_router(api_prefix: str) -> APIRouter:
    """Routes carry the full prefix themselves so `scope["route"].path` is the whole
    template (metrics label it); an include_router() prefix would not show there."""
    router = APIRouter(prefix=f"{api_prefix}/products", tags=["products"])
    router.add_api_route(
        "",
        create_product,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        response_model=ProductOut,
        responses=responses(400, 401, 403, 409, 413, 503),
        dependencies=WRITE,
    )
    router.add_api_route(
        "", list_products, methods=["GET"], response_model=ProductPage, responses=responses(503)
    )
    router.add_api_route(
        "/{product_id}",
        get_product,
        methods=["GET"],
        response_model=ProductOut,
        responses=responses(404, 503),
    )
    router.add_api_route(
        "/{product_id}",
        update_product,
        methods=["PATCH"],
        response_model=ProductOut,
        responses=responses(400, 401, 403, 404, 409, 413, 503),
        dependencies=WRITE,
    )
    router.add_api_route(
        "/{product_id}",
        delete_product,
        methods=["DELETE"],
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
        responses=responses(401, 403, 404, 409, 503),
        dependencies=WRITE,
    )
    return router
