"""Routes as a policy (`app.images.routing`, `app.images.breaker`): weighted shares, cheapest
first, retries with backoff inside the deadline, and a sick provider cooled down and probed
back. Adapters are small fakes; the clock and the sleep are injected, so nothing waits."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest
from pydantic import ValidationError

from app.adapters.base import AdapterResult, ImageRequest, PartialSink, UpstreamImage
from app.catalog.schema import ModelConfig, ProviderConfig
from app.errors import ContentBlocked, UpstreamError, UpstreamUnavailable
from app.images.breaker import CircuitBreaker
from app.images.routing import Router, RouteTrace, order_routes

pytestmark = pytest.mark.anyio

REQUEST = ImageRequest(prompt="p", n=1, output_format="png", sizing="none", size=None, params={})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeAdapter:
    def __init__(self, name: str, fail: int = 0, error: Exception | None = None) -> None:
        self.name, self.fail, self.calls = name, fail, 0
        self.error = error or UpstreamError(f"{name} broke")

    async def generate(
        self, request: ImageRequest, *, upstream_model: str, on_partial: PartialSink | None = None
    ) -> AdapterResult:
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise self.error
        return AdapterResult(images=[UpstreamImage(self.name.encode())])


def model(strategy: str = "fallback", **extra: Any) -> ModelConfig:
    routes = extra.pop("routes", [{"provider": "a", "weight": 3}, {"provider": "b", "weight": 1}])
    return ModelConfig.model_validate(
        {"routes": routes, "strategy": strategy, "pricing": {"per_image": 0.01}, **extra}
    )


PROVIDERS = {name: ProviderConfig(adapter="fake", timeout_s=10) for name in "abc"}


async def call(router: Router, config: ModelConfig, adapters: dict[str, Any]) -> RouteTrace:
    trace = RouteTrace()
    await router.call(
        model_id="m", config=config, adapters=adapters, providers=PROVIDERS,
        request=REQUEST, trace=trace,
    )  # fmt: skip
    return trace


async def test_weighted_routing_over_1000_requests_matches_the_weights() -> None:
    router = Router(rng=random.Random(11))
    adapters = {"a": FakeAdapter("a"), "b": FakeAdapter("b")}
    config = model("weighted")
    firsts = collections.Counter()
    for _ in range(1000):
        firsts[(await call(router, config, adapters)).provider] += 1
    print(f"\nweighted 3:1 over 1000 requests: {dict(firsts)}")
    assert abs(firsts["a"] / 1000 - 0.75) < 0.04
    assert firsts["a"] + firsts["b"] == 1000


def test_weight_zero_is_fallback_only_and_cheapest_sorts_by_cost() -> None:
    rng = random.Random(1)
    weighted = model("weighted", routes=[{"provider": "a", "weight": 0}, {"provider": "b"}])
    assert all(
        [r.provider for r in order_routes("weighted", weighted.routes, rng)] == ["b", "a"]
        for _ in range(50)
    )
    cheapest = model(
        "cheapest", routes=[{"provider": "a", "cost": "0.04"}, {"provider": "b", "cost": "0.02"}]
    )
    assert [r.provider for r in order_routes("cheapest", cheapest.routes, rng)] == ["b", "a"]


@pytest.mark.parametrize(
    ("strategy", "routes", "message"),
    [
        ("cheapest", [{"provider": "a"}], "needs a 'cost' on every route; missing on a"),
        ("weighted", [{"provider": "a", "weight": 0}], "at least one route with weight > 0"),
        ("roundrobin", [{"provider": "a"}], "strategy"),
    ],
)
def test_bad_policies_are_refused_at_start_up(strategy: str, routes: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model(strategy, routes=routes)


async def test_retries_back_off_with_jitter_inside_the_deadline() -> None:
    clock, pauses = FakeClock(), []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.now += seconds

    router = Router(rng=random.Random(3), sleep=sleep, clock=clock, backoff_s=1, max_backoff_s=8)
    adapters = {"a": FakeAdapter("a", fail=2), "b": FakeAdapter("b")}
    config = model(routes=[{"provider": "a", "retries": 3}, {"provider": "b"}])
    trace = await call(router, config, adapters)
    assert str(trace) == "a:UPSTREAM_ERROR>a:UPSTREAM_ERROR>a:ok"
    assert len(pauses) == 2 and 0 <= pauses[0] <= 1 and 0 <= pauses[1] <= 2

    # a deadline too short for the next backoff moves on to the next route instead
    clock2 = FakeClock()

    class SlowFailing(FakeAdapter):
        async def generate(self, request: ImageRequest, **kwargs: Any) -> AdapterResult:
            clock2.now += 4.9  # the attempt used up almost all of the 5 s deadline
            return await super().generate(request, **kwargs)

    async def no_sleep(seconds: float) -> None:
        raise AssertionError(f"a {seconds} s pause does not fit the deadline")

    router = Router(rng=random.Random(3), sleep=no_sleep, clock=clock2, backoff_s=1)
    adapters = {"a": SlowFailing("a", fail=5), "b": FakeAdapter("b")}
    config = model(routes=[{"provider": "a", "retries": 3}, {"provider": "b"}], deadline_s=5)
    trace = await call(router, config, adapters)
    assert trace.provider == "b" and adapters["a"].calls == 1


async def test_a_failing_provider_is_cooled_down_then_probed_back() -> None:
    clock, events = FakeClock(), []

    async def record(provider: str, event: str, since: str) -> None:
        events.append((provider, event))

    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=clock, on_transition=record)
    router = Router(breaker=breaker, clock=clock)
    sick, healthy = FakeAdapter("a", fail=4), FakeAdapter("b")
    adapters = {"a": sick, "b": healthy}
    config = model()
    for _ in range(3):
        assert (await call(router, config, adapters)).provider == "b"
    assert await breaker.state("a") == "open" and events == [("a", "cooled_down")]
    trace = await call(router, config, adapters)
    assert str(trace) == "a:SKIPPED_COOLDOWN>b:ok" and sick.calls == 3

    clock.now += 31  # half-open: one probe goes through, fails, and the provider reopens
    assert str(await call(router, config, adapters)) == "a:UPSTREAM_ERROR>b:ok"
    assert await breaker.state("a") == "open" and sick.calls == 4
    clock.now += 31  # the next probe succeeds: closed again
    assert str(await call(router, config, adapters)) == "a:ok"
    assert await breaker.state("a") == "closed"
    assert events == [("a", "cooled_down"), ("a", "recovered")]


async def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    await breaker.record_failure("a")
    assert not await breaker.try_acquire("a")
    clock.now += 6
    assert [await breaker.try_acquire("a") for _ in range(3)] == [True, False, False]


async def test_non_retryable_refusals_end_at_once_and_do_not_sicken_the_provider() -> None:
    breaker = CircuitBreaker(failure_threshold=1)
    router = Router(breaker=breaker)
    adapters = {"a": FakeAdapter("a", fail=1, error=ContentBlocked("no")), "b": FakeAdapter("b")}
    with pytest.raises(ContentBlocked):
        await call(router, model(), adapters)
    assert await breaker.state("a") == "closed" and adapters["b"].calls == 0


async def test_every_provider_cooling_down_is_a_503() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=60)
    router = Router(breaker=breaker)
    adapters = {"a": FakeAdapter("a", fail=9), "b": FakeAdapter("b", fail=9)}
    with pytest.raises(UpstreamUnavailable):
        await call(router, model(), adapters)
    with pytest.raises(UpstreamUnavailable, match="cooling down"):
        await call(router, model(), adapters)
    assert adapters["a"].calls == adapters["b"].calls == 1
