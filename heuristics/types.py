"""Frozen value types of the heuristics layer: the rule table's entries and the recommendation.

Every result type has ``to_dict()`` returning plain JSON-ready types (lists, dicts, str, int,
float, bool, None) in a fixed order, so ``json.dumps(rec.to_dict())`` is deterministic.
Floats are kept exact: formatting for people is the report's job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

Confidence = Literal["low", "medium", "high", "user"]
CONFIDENCE_LEVELS: tuple[Confidence, ...] = ("low", "medium", "high")  # what rules may state
# Weakest first. "user" marks a value the user set: it outranks every rule, so a value derived
# from it takes the confidence of the rule that derived it.
CONFIDENCE_ORDER: tuple[Confidence, ...] = (*CONFIDENCE_LEVELS, "user")
RuleKind = Literal["decide", "adjust", "default"]
RULE_KINDS: tuple[RuleKind, ...] = ("decide", "adjust", "default")

View = Mapping[str, Any]
"""What a rule's functions see: its ``needs`` by name, its ``params``, ``because`` (the reason
text of every earlier target it needs, by name), ``ranges`` (their search ranges), and, for the
reason text and the range, ``value`` (what the effect returned) and ``previous`` (the value an
adjust rule changed)."""


class FrozenMap(Mapping[str, Any]):
    """A read-only, ordered, picklable mapping (unlike ``types.MappingProxyType``)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_items", dict(items or {}))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenMap is read-only")

    def __reduce__(self):
        return (FrozenMap, (self._items,))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def plain(value: Any) -> Any:
    """``value`` as JSON-ready plain types: tuples become lists, mappings dicts."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def inside(name: str, modules: Iterable[str]) -> bool:
    """Whether the dotted module or parameter ``name`` is one of ``modules`` or lies inside
    one (``"blocks.1.conv.weight"`` is inside ``"blocks.1"``, not inside ``"blocks.10"``)."""
    return any(name == m or name.startswith(m + ".") for m in modules)


@dataclass(frozen=True)
class Block:
    """A transferable group of the backbone's modules, ending at one probed feature point.

    Parameters
    ----------
    name : str
        Unique among the backbone's blocks, e.g. ``"stage3"``.
    modules : tuple of str
        The module names (as in ``model.named_modules()``) the block is made of.
    """

    name: str
    modules: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Block name must be a non-empty string, got {self.name!r}")
        if isinstance(self.modules, str):
            raise TypeError(f"Block {self.name!r}: modules must be a sequence of module names, "
                            f"got the string {self.modules!r}; write ({self.modules!r},)")
        modules = tuple(self.modules)
        if not modules:
            raise ValueError(f"Block {self.name!r} has no modules; give at least one module name")
        for module in modules:
            if not isinstance(module, str) or not module:
                raise ValueError(f"Block {self.name!r}: module names must be non-empty strings, "
                                 f"got {module!r}")
        object.__setattr__(self, "modules", modules)

    def contains(self, name: str) -> bool:
        """Whether the module or parameter ``name`` (dotted, as in ``named_modules()`` or
        ``named_parameters()``) is one of the block's modules or lies inside one."""
        return inside(name, self.modules)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "modules": list(self.modules)}


@dataclass(frozen=True)
class Derived:
    """A quantity computed from other named inputs, looked up by rules like a measure.

    ``compute`` receives a view of ``inputs`` by name. A rule that needs a derived quantity
    whose inputs are missing is skipped, and the trace names the missing input.
    """

    name: str
    inputs: tuple[str, ...]
    compute: Callable[[View], Any]
    description: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))


@dataclass(frozen=True)
class Rule:
    """One entry of the declarative rule table.

    Attributes
    ----------
    id : str
        Stable identifier, ``"<area>.<what>"``; cited by reasons, details and the trace.
    target : str
        The hyperparameter (or intermediate finding, e.g. ``"feature_fit"``) the rule sets.
    needs : tuple of str
        Names the rule reads: measures, dataset facts, derived quantities, or targets of
        earlier rules. If one is missing the rule is skipped and the trace says which.
    condition : callable
        ``condition(view) -> bool``: whether the rule fires.
    effect : callable
        ``effect(view) -> value`` for ``target``.
    reason : str
        One sentence, a ``str.format`` template over the view plus ``value`` and ``previous``.
    source : str
        Where the rule comes from.
    when : str
        The condition in words, a template over the view; the trace shows it filled in.
    kind : {"decide", "adjust", "default"}
        ``decide``: sets ``target`` unless an earlier rule did. ``adjust``: changes a value
        that an earlier rule set (a cap; must need ``target``). ``default``: like ``decide``,
        and the hyperparameter is reported in ``defaults_used``.
    params : mapping
        The named threshold constants the rule uses, visible in the view and the reason.
    confidence : str or callable
        ``"low" | "medium" | "high"`` or ``confidence(view)``; the value's confidence is the
        weakest of this and that of every earlier target the rule needs.
    search_range : callable or None
        ``search_range(view) -> tuple``: ``(lo, hi)`` for a float, candidate values otherwise.
        ``None`` gives just the value.
    """

    id: str
    target: str
    needs: tuple[str, ...]
    condition: Callable[[View], bool]
    effect: Callable[[View], Any]
    reason: str
    source: str
    when: str = "always"
    kind: RuleKind = "decide"
    params: Mapping[str, Any] = field(default_factory=FrozenMap)
    confidence: Confidence | Callable[[View], Confidence] = "medium"
    search_range: Callable[[View], tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "params", FrozenMap(self.params))
        if self.kind not in RULE_KINDS:
            raise ValueError(f"rule {self.id!r}: kind must be one of {RULE_KINDS}, "
                             f"got {self.kind!r}")
        if self.kind == "adjust" and self.target not in self.needs:
            raise ValueError(f"rule {self.id!r} adjusts {self.target!r} so it must list it "
                             f"in needs")
        if isinstance(self.confidence, str) and self.confidence not in CONFIDENCE_LEVELS:
            raise ValueError(f"rule {self.id!r}: confidence must be one of "
                             f"{CONFIDENCE_LEVELS}, got {self.confidence!r}")


class _ToDict:
    """``to_dict`` for a frozen dataclass whose fields all convert with :func:`plain`."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class LrGroup(_ToDict):
    """A learning-rate group: a name, its learning rate, the blocks and modules it holds, and
    the penalty on its weights (``"l2sp"`` toward the pre-trained weights or ``"l2"`` toward
    zero; BatchNorm parameters excluded either way).

    ``rest`` marks the group that takes every parameter no other group names (when no
    blocks were given, the whole backbone): its ``modules`` are then empty.
    """

    name: str
    lr: float
    blocks: tuple[str, ...]
    modules: tuple[str, ...]
    penalty: str
    rest: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LrGroup:
        """The group ``to_dict()`` wrote (lists for tuples); see :meth:`Hyperparameters.from_dict`.

        Raises
        ------
        ValueError
            A missing or unknown key (the message names it).
        """
        values = _known_keys(cls, d, "an lr_groups entry")
        return cls(**{**values, "blocks": tuple(values["blocks"]),
                      "modules": tuple(values["modules"])})


@dataclass(frozen=True)
class Hyperparameters(_ToDict):
    """The recommended fine-tuning hyperparameters (see :func:`heuristics.advise`).

    ``lr_groups`` carry ``head_lr``, ``upper_lr`` and ``lower_lr`` and each group's penalty;
    ``l2sp_modules`` and ``l2_modules`` list the modules of the groups under each (a ``rest``
    group names none); parameters of the kinds in ``exclude_from_decay`` are under neither.
    ``steps`` is ``None`` without a dataset size; ``effective_lr`` is ``None`` for an
    optimiser without SGD momentum.
    """

    reinit_top_blocks: int
    reinit_modules: tuple[str, ...]
    split_block: str | None
    lr_groups: tuple[LrGroup, ...]
    optimizer: str
    momentum: float
    base_lr: float
    effective_lr: float | None
    l2sp_weight: float
    l2sp_modules: tuple[str, ...]
    l2_weight: float
    l2_modules: tuple[str, ...]
    exclude_from_decay: tuple[str, ...]
    batch_size: int
    epochs: int
    steps: int | None
    schedule: str
    warmup_epochs: int
    lp_ft: bool
    lp_epochs: int
    label_smoothing: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Hyperparameters:
        """The hyperparameters ``to_dict()`` wrote: the one way back from JSON.

        ``Hyperparameters.from_dict(hp.to_dict()) == hp``: lists become tuples again and
        ``lr_groups`` entries :class:`LrGroup` objects. Values are not checked otherwise.

        Parameters
        ----------
        d : mapping
            The ``hyperparameters`` object of a recommendation's JSON document.

        Raises
        ------
        ValueError
            A missing or unknown key, at the top or in an ``lr_groups`` entry (the message
            names them).
        """
        values = _known_keys(cls, d, "hyperparameters")
        for name in _TUPLE_FIELDS:
            values[name] = tuple(values[name])
        values["lr_groups"] = tuple(LrGroup.from_dict(g) for g in values["lr_groups"])
        return cls(**values)


_TUPLE_FIELDS = ("reinit_modules", "l2sp_modules", "l2_modules", "exclude_from_decay")


def _known_keys(cls: type, d: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``d`` as a dict, if its keys are exactly ``cls``'s fields (those with a default optional)."""
    if not isinstance(d, Mapping):
        raise TypeError(f"{what} must be a mapping (a JSON object), got {type(d).__name__}")
    every = [f.name for f in fields(cls)]
    required = [f.name for f in fields(cls) if f.default is MISSING]
    missing = [name for name in required if name not in d]
    unknown = [str(name) for name in d if name not in every]
    if missing or unknown:
        found = "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "",
            f"unknown {', '.join(unknown)}" if unknown else "") if part)
        raise ValueError(f"{what}: {found}; pass the `hyperparameters` object of the JSON "
                         f"document nbtl-recommend wrote")
    return dict(d)


@dataclass(frozen=True)
class Detail(_ToDict):
    """One hyperparameter: its value, a search range around it, how sure, and why.

    Attributes
    ----------
    value
        The recommended value.
    range : tuple
        ``(lo, hi)`` for a float, candidate values otherwise, for a search that follows.
    confidence : {"low", "medium", "high", "user"}
        ``"user"``: set by a user override.
    reason : str
        One line for a report: the deciding rule's sentence with its values filled in,
        ``"Default: ..."``, or ``"set by the user"``.
    source : str
        Where the deciding rule comes from.
    set_by : str
        The id of the deciding rule (``"override"`` for a user override).
    reasons : tuple of str
        Every rule the value rests on, in table order (``"override"`` first when a user value
        is among them); the last is ``set_by``.
    measures : mapping
        The measures and dataset facts the value rests on, by name.
    cautions : tuple of str
        The ids of the cautions (:data:`heuristics.cautions.CAUTIONS`) that capped the
        confidence: they say the measures cannot decide, whatever the rules found.
    """

    value: Any
    range: tuple[Any, ...]
    confidence: Confidence
    reason: str
    source: str
    set_by: str
    reasons: tuple[str, ...]
    measures: Mapping[str, Any]
    cautions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reason(_ToDict):
    """Why a rule fired: its sentence with the values filled in, the values, the source."""

    rule: str
    target: str
    text: str
    measures: Mapping[str, Any]
    source: str


@dataclass(frozen=True)
class TraceEntry(_ToDict):
    """One rule as evaluated: whether it fired and why (or why not)."""

    rule: str
    fired: bool
    why: str


@dataclass(frozen=True)
class CautionRule:
    """One entry of the caution table: when the inputs cannot carry the recommendation.

    Attributes
    ----------
    id : str
        Stable identifier, ``"caution.<what>"``; cited by the warning, details and the trace.
    needs : tuple of str
        Measures, dataset facts or derived quantities it reads; if one is missing it is silent
        and the trace says which.
    condition : callable
        ``condition(view) -> bool``: whether the caution fires.
    text : str
        One sentence for the user, a ``str.format`` template over the view.
    when : str
        The condition in words, a template over the view; the trace shows it filled in.
    source : str
        Where the threshold comes from, or that it is provisional.
    params : mapping
        The named threshold constants it uses, visible in the view and the text.
    cap : {"low", "medium", "high"} or None
        The most confidence a value set by a rule keeps while the caution fires (a user's
        value keeps ``"user"``); ``None`` warns without capping.
    """

    id: str
    needs: tuple[str, ...]
    condition: Callable[[View], bool]
    text: str
    when: str
    source: str
    params: Mapping[str, Any] = field(default_factory=FrozenMap)
    cap: Confidence | None = "low"

    def __post_init__(self) -> None:
        object.__setattr__(self, "needs", tuple(self.needs))
        object.__setattr__(self, "params", FrozenMap(self.params))
        if self.cap is not None and self.cap not in CONFIDENCE_LEVELS:
            raise ValueError(f"caution {self.id!r}: cap must be one of {CONFIDENCE_LEVELS} "
                             f"or None, got {self.cap!r}")


@dataclass(frozen=True)
class Caution(_ToDict):
    """A caution that fired: its sentence with the values filled in, the values, the source,
    and the confidence it capped the recommendation at (``None``: none)."""

    id: str
    text: str
    measures: Mapping[str, Any]
    source: str
    cap: Confidence | None


@dataclass(frozen=True)
class Recommendation:
    """The hyperparameters, the detail behind each, the reasons, the full trace and the
    warnings (the cautions that fired)."""

    hyperparameters: Hyperparameters
    details: Mapping[str, Detail]
    reasons: tuple[Reason, ...]
    trace: tuple[TraceEntry, ...]
    defaults_used: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=FrozenMap)
    warnings: tuple[Caution, ...] = ()
    # The fitted ladder's verdict (None when its measure was missing): the rung, whether the
    # advice is to keep the binary default, the fit gap and the budget the advice is for.
    ladder: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hyperparameters": self.hyperparameters.to_dict(),
            "details": plain(self.details),
            "reasons": plain(self.reasons),
            "trace": plain(self.trace),
            "defaults_used": list(self.defaults_used),
            "overrides": plain(self.overrides),
            "warnings": plain(self.warnings),
            "ladder": plain(self.ladder) if self.ladder is not None else None,
        }
