"""Load YAML documents into frozen pydantic models, reporting every problem with its YAML path and line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple, Type, TypeVar

import pydantic
import yaml

from contract.errors import Error, LocatedProblem, ValidationError, invalid

M = TypeVar("M", bound=pydantic.BaseModel)
Loc = Tuple[Any, ...]


class Frozen(pydantic.BaseModel):
    """Base of every document model: immutable, unknown keys are errors."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def yaml_path(loc: Iterable[Any]) -> str:
    """('images', 3, 'ref') -> 'images[3].ref'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _lines(node: yaml.Node, loc: Loc, acc: Dict[Loc, int]) -> None:
    acc[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            acc[loc + (key,)] = k.start_mark.line + 1
            _lines(v, loc + (key,), acc)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, loc + (i,), acc)


def _duplicates(node: yaml.Node, loc: Loc, seen_nodes: Set[int]) -> Iterator[LocatedProblem]:
    """Every mapping key given twice, with both lines (YAML itself keeps the last one silently)."""
    if id(node) in seen_nodes:  # an alias of a node already walked
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: Dict[Tuple[str, str], yaml.Mark] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                was, mark = first.setdefault((k.tag, k.value), k.start_mark), k.start_mark
                if was is not mark:
                    where = (f"lines {was.line + 1} and {mark.line + 1}" if was.line != mark.line else
                             f"line {mark.line + 1}, columns {was.column + 1} and {mark.column + 1}")
                    yield LocatedProblem(yaml_path(loc + (k.value,)), f"duplicate key ({where})",
                                         "remove one of them")
            yield from _duplicates(v, loc + (k.value,), seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            yield from _duplicates(v, loc + (i,), seen_nodes)


def read_yaml(path: Path, what: str) -> Tuple[Any, Dict[Loc, int]]:
    """Parse a YAML file; return the data and a map of YAML path -> line number.

    A key given twice in one mapping is an error naming both lines (YAML would keep the last one silently)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Error(f"{what} not found: {path}", context=f"reading the {what}",
                    hint="check the path, or pass the file explicitly") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Error(f"cannot read {path}: {e}", context=f"reading the {what}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(
            f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}",
            context=f"parsing the {what}",
            hint="check indentation and quoting around that line",
        ) from None
    lines: Dict[Loc, int] = {}
    if node is not None:
        dups = list(_duplicates(node, (), set()))
        if dups:
            raise invalid(what, str(path), dups, "a key may appear only once in a mapping: keep the one you mean")
        _lines(node, (), lines)
    return data, lines


def _hint_for(err: dict, model: Type[pydantic.BaseModel]) -> Optional[str]:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        known = _known_fields(model, err["loc"][:-1])
        close = difflib.get_close_matches(field, known, n=1)
        if close:
            return f"did you mean '{close[0]}'?"
        return f"known keys here: {', '.join(sorted(known))}" if known else None
    if kind == "missing":
        return "add this key"
    ctx = err.get("ctx") or {}
    return ctx.get("hint") if isinstance(ctx.get("hint"), str) else None


def _known_fields(model: Type[pydantic.BaseModel], loc: Loc) -> List[str]:
    """Field names of the sub-model at loc (best effort: follows fields, lists and optionals)."""
    cur: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        cur = _inner_model(fields[part].annotation)
    fields = getattr(cur, "model_fields", None) or {}
    return [f.alias or n for n, f in fields.items()]


def _inner_model(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _message(err: dict) -> str:
    msg = err.get("msg", "invalid")
    if err.get("type") == "extra_forbidden":
        return "unknown key"
    if err.get("type") == "missing":
        return "required key is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _clean_loc(loc: Loc) -> Loc:
    # pydantic adds the tag of a union member or a validator name; keep only YAML keys and indexes
    return tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "tagged-union")))


def problems_from(exc: pydantic.ValidationError, model: Type[pydantic.BaseModel],
                  lines: Dict[Loc, int]) -> List[LocatedProblem]:
    """Turn pydantic's errors into located problems, one per error."""
    out = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        line = lines.get(loc) or lines.get(loc[:-1])
        path = yaml_path(loc)
        if line:
            path = f"{path} (line {line})" if path else f"line {line}"
        out.append(LocatedProblem(path, _message(err), _hint_for({**err, "loc": loc}, model)))
    return out


def load_document(
    path: Path,
    model: Type[M],
    what: str,
    hint: str,
    checks: Optional[Callable[[M], Iterable[Tuple[Loc, str, Optional[str]]]]] = None,
    overlay: Optional[Callable[[Any], Any]] = None,
) -> M:
    """Read, validate and cross-check a YAML document; raise one ValidationError listing every problem."""
    data, lines = read_yaml(path, what)
    if overlay is not None:
        data = overlay(data)
    return validate_data(data, model, str(path), what, hint, checks, lines)


def validate_data(
    data: Any,
    model: Type[M],
    source: str,
    what: str,
    hint: str,
    checks: Optional[Callable[[M], Iterable[Tuple[Loc, str, Optional[str]]]]] = None,
    lines: Optional[Dict[Loc, int]] = None,
) -> M:
    """Validate already-parsed data; same error reporting as load_document."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise invalid(what, source, [LocatedProblem("", "the document must be a mapping (key: value)")], hint)
    try:
        obj = model.model_validate(data)
    except pydantic.ValidationError as e:
        raise invalid(what, source, problems_from(e, model, lines), hint) from None
    if checks is not None:
        found = []
        for loc, message, h in checks(obj):
            line = lines.get(tuple(loc))
            path = yaml_path(loc)
            found.append(LocatedProblem(f"{path} (line {line})" if line else path, message, h))
        if found:
            raise invalid(what, source, found, hint)
    return obj
