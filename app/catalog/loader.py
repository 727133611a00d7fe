"""Loading `config/models.yaml` into a `Catalog`, once, at start-up.

    catalog = load_catalog(Path(settings.gateway_config), os.environ)
    model = catalog.get("local-preview")          # CompiledModel | None
    validated = model.validate(body)              # ValidatedGeneration
    hold = model.price.quote(validated.request)   # micro-dollars

Steps, each failing with a `CatalogError` that names the file and the dotted field path:
1. parse the YAML (duplicate keys are an error: YAML would silently keep the last one);
2. substitute `${VAR}` / `${VAR:-default}` from `env` in every string value (`$${` is a
   literal `${`); an unset VAR without a default becomes "" (`:-` also replaces an empty VAR,
   as in the shell); substitution applies to values, never to keys; a provider's `base_url`,
   `api_key` or `api_version` that ends up empty counts as not set (the adapter's default);
3. validate the shape with the pydantic `CatalogFile`;
4. cross-check and compile every model (`app.catalog.parameters.compile_model`), hidden or not,
   so a broken entry fails start-up even on a machine without the provider's secrets;
5. drop the routes through providers that need an API key and have none; a model left without
   routes is hidden (absent from `Catalog.models`) with a warning, not a crash (SPEC 3).

Adapters that need no key: `local-preview`, and `openai` with `options: {auth: none}` (local
OpenAI-compatible servers). Every other adapter needs `api_key`. Adapter names themselves are
checked by the adapter registry when it builds the adapters, not here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.catalog.errors import CatalogError, PathPart, dotted
from app.catalog.parameters import CompiledModel, compile_model
from app.catalog.schema import AliasConfig, CatalogFile, ProviderConfig

logger = logging.getLogger(__name__)

#: adapters that authenticate without an api_key
KEYLESS_ADAPTERS = frozenset({"local-preview"})

_VARIABLE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: pydantic inserts union member names into error locations; they mean nothing to operators
_UNION_TAGS = frozenset(
    {"str", "int", "float", "bool", "decimal", "none", "list[str]", "dict[str,any]"}
    | {"PerImagePrice", "PerMegapixelPrice", "PerTokenPrice"}
)
#: provider fields where an empty value (an unset ${VAR}) means "not set"
_OPTIONAL_PROVIDER_FIELDS = ("base_url", "api_key", "api_version")
_PARAM_TYPES = frozenset({"enum", "integer", "number", "boolean", "string"})


@dataclass(frozen=True, slots=True)
class HiddenModel:
    model: CompiledModel
    reason: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """The usable catalog: providers with credentials, and the models routed through them."""

    #: providers that can be called (those needing a key have one)
    providers: dict[str, ProviderConfig]
    #: visible models only, in file order; each keeps only its usable routes
    models: dict[str, CompiledModel]
    #: operator-facing notes about hidden models and dropped routes (also logged)
    warnings: list[str] = field(default_factory=list)
    #: visible aliases: alias -> (default target, {account_id: target}); targets are visible
    aliases: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    #: every declared provider, usable or not (start-up builds an adapter for each as a check)
    declared_providers: dict[str, ProviderConfig] = field(default_factory=dict)
    #: models left without a usable route, compiled, with why (which credential is missing)
    hidden: dict[str, HiddenModel] = field(default_factory=dict)

    def get(self, model_id: str, account_id: str | None = None) -> CompiledModel | None:
        """The model behind an id or an alias (resolved for `account_id` when given)."""
        model = self.models.get(model_id)
        if model is not None:
            return model
        alias = self.aliases.get(model_id)
        if alias is None:
            return None
        default, per_account = alias
        target = per_account.get(account_id, default) if account_id is not None else default
        return self.models.get(target)

    def listed(self, account_id: str | None = None) -> list[tuple[str, CompiledModel]]:
        """What `/v1/models` lists: every model, then every alias with its target's entry."""
        entries = list(self.models.items())
        for alias in self.aliases:
            target = self.get(alias, account_id)
            if target is not None:
                entries.append((alias, target))
        return entries


def needs_api_key(provider: ProviderConfig) -> bool:
    if provider.adapter in KEYLESS_ADAPTERS:
        return False
    return not (provider.adapter == "openai" and provider.options.get("auth") == "none")


def load_catalog(path: Path, env: Mapping[str, str]) -> Catalog:
    """Read, substitute, validate and compile the catalog file (see the module docstring)."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read the catalog: {exc.strerror or exc}", file=file) from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogError(f"invalid YAML: {exc}", file=file) from None
    if not isinstance(raw, dict):
        raise CatalogError("the top level must be a mapping (providers:, models:)", file=file)
    unset: dict[tuple[PathPart, ...], list[str]] = {}
    try:
        substituted = _substitute(raw, env, (), unset)
        _drop_empty_provider_fields(substituted)
        parsed = CatalogFile.model_validate(substituted)
        return _build(parsed, unset)
    except ValidationError as exc:
        raise CatalogError(_describe(exc, file)) from None
    except CatalogError as exc:
        raise exc.in_file(file) from None


def _build(parsed: CatalogFile, unset: dict[tuple[PathPart, ...], list[str]]) -> Catalog:
    usable: dict[str, ProviderConfig] = {}
    missing_key: dict[str, str] = {}
    for name, provider in parsed.providers.items():
        if needs_api_key(provider) and not (provider.api_key or "").strip():
            variables = unset.get(("providers", name, "api_key"), [])
            missing_key[name] = f"set {' / '.join(variables)}" if variables else "no api_key"
        else:
            usable[name] = provider

    warnings: list[str] = []
    #: hidden models grouped by why, so a keyless start says one line per missing credential
    hidden: dict[str, list[str]] = {}
    models: dict[str, CompiledModel] = {}
    hidden_models: dict[str, HiddenModel] = {}
    for model_id, config in parsed.models.items():
        for index, route in enumerate(config.routes):
            if route.provider not in parsed.providers:
                raise CatalogError(
                    f"unknown provider {route.provider!r} (declared: "
                    f"{', '.join(parsed.providers) or 'none'})",
                    path=("models", model_id, "routes", index, "provider"),
                )
        compiled = compile_model(model_id, config)
        routes = [route for route in config.routes if route.provider in usable]
        dropped = [route.provider for route in config.routes if route.provider not in usable]
        reasons = "; ".join(f"provider {p!r}: {missing_key[p]}" for p in dict.fromkeys(dropped))
        if not routes:
            hidden.setdefault(reasons, []).append(model_id)
            hidden_models[model_id] = HiddenModel(compiled, reasons)
            continue
        if dropped:
            warnings.append(f"model {model_id!r}: routes skipped ({reasons})")
            compiled = compile_model(model_id, config.model_copy(update={"routes": routes}))
        models[model_id] = compiled
    for reasons, model_ids in hidden.items():
        if len(model_ids) == 1:
            subject = f"model {model_ids[0]!r} is"
        else:
            subject = f"models {', '.join(repr(m) for m in model_ids)} are"
        warnings.append(f"{subject} hidden: no usable route ({reasons})")
    aliases = _aliases(parsed, models, warnings)
    for message in warnings:
        logger.warning("catalog: %s", message)
    return Catalog(
        providers=usable,
        models=models,
        warnings=warnings,
        aliases=aliases,
        declared_providers=dict(parsed.providers),
        hidden=hidden_models,
    )


def _aliases(
    parsed: CatalogFile, visible: dict[str, CompiledModel], warnings: list[str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Check every alias against the models; hide (with a warning) those whose target is."""
    aliases: dict[str, tuple[str, dict[str, str]]] = {}
    for name, raw in parsed.aliases.items():
        config = AliasConfig(model=raw) if isinstance(raw, str) else raw
        if name in parsed.models:
            raise CatalogError(
                f"alias {name!r} is also a model id; pick another name", path=("aliases", name)
            )
        targets = {("aliases", name, "model"): config.model} | {
            ("aliases", name, "accounts", account): target
            for account, target in config.accounts.items()
        }
        for path, target in targets.items():
            if target not in parsed.models:
                raise CatalogError(
                    f"alias target {target!r} is not a model of this catalog", path=path
                )
        if config.model not in visible:
            warnings.append(f"alias {name!r} is hidden: its model {config.model!r} is hidden")
            continue
        per_account = {a: t for a, t in config.accounts.items() if t in visible}
        aliases[name] = (config.model, per_account)
    return aliases


def _drop_empty_provider_fields(tree: dict[Any, Any]) -> None:
    """`base_url: ${X}` with X unset means "the adapter's default", not an empty URL."""
    providers = tree.get("providers")
    if not isinstance(providers, dict):
        return
    for provider in providers.values():
        if isinstance(provider, dict):
            for name in _OPTIONAL_PROVIDER_FIELDS:
                if provider.get(name) == "":
                    del provider[name]


def _substitute(
    value: Any,
    env: Mapping[str, str],
    path: tuple[PathPart, ...],
    unset: dict[tuple[PathPart, ...], list[str]],
) -> Any:
    """Replace `${VAR}` in every string of the tree, noting variables that were unset."""
    if isinstance(value, str):
        return _expand(value, env, path, unset) if "$" in value else value
    if isinstance(value, dict):
        return {key: _substitute(item, env, (*path, key), unset) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, env, (*path, i), unset) for i, item in enumerate(value)]
    return value


def _expand(
    text: str,
    env: Mapping[str, str],
    path: tuple[PathPart, ...],
    unset: dict[tuple[PathPart, ...], list[str]],
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match[0] == "$${":
            return "${"
        name, has_default, default = match[1].partition(":-")
        if not _NAME.fullmatch(name):
            raise CatalogError(f"bad variable reference {match[0]!r}", path=path)
        found = env.get(name)
        if has_default:
            return found if found else default
        if not found:
            unset.setdefault(path, []).append(name)
        return found or ""

    result = _VARIABLE.sub(replace, text)
    if "${" in _VARIABLE.sub("", text):
        raise CatalogError(f"unterminated variable reference in {text!r}", path=path)
    return result


def _describe(exc: ValidationError, file: str) -> str:
    """One line per problem: `file: dotted.path: message`, union noise folded away."""
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        loc = list(error["loc"])
        clean: list[PathPart] = []
        for i, part in enumerate(loc):
            if part in _UNION_TAGS or str(part).startswith("function-"):
                continue
            if part in _PARAM_TYPES and i >= 2 and loc[i - 2] == "parameters":
                continue  # the discriminator tag of a parameter spec
            clean.append(part)
        message = str(error["msg"])
        messages = problems.setdefault(dotted(clean), [])
        if message not in messages:
            messages.append(message)
    lines = []
    for where, messages in problems.items():
        if any(other.startswith(f"{where}.") for other in problems):
            continue  # a union alternative that failed higher up; the deeper error says more
        joined = messages[0]
        for extra in messages[1:]:
            joined += " or " + extra.removeprefix("Input should be ")
        lines.append(f"{file}: {where}: {joined}" if where else f"{file}: {joined}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (YAML would keep the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
