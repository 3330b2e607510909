"""The wire format and tube names, compatible with Ruby backburner.

A body is UTF-8 JSON ``{"class": "<job name>", "args": [...]}``. It is data
only: decoding never imports or evaluates anything (rule 4). Tube names are
expanded as backburner's ``expand_tube_name`` does, but a name beanstalkd
would reject is an error here rather than a ``BAD_FORMAT`` at run time.
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

# beanstalkd's dat.h/prot.c: 1-200 bytes of these characters, not starting with '-'.
MAX_TUBE_BYTES = 200
_TUBE_CHARS = re.compile(r"[A-Za-z0-9+/;.$_()-]+")
# allow_nan=False: NaN and Infinity are not JSON, and Ruby's parser rejects
# them. ensure_ascii=False: plain UTF-8 like Ruby's to_json, and a lone
# surrogate (no UTF-8 form, unreadable in Ruby) fails in encode() below.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


class PayloadError(ValueError):
    """A body that cannot name a job; ``str()`` is the reason logged on bury."""


class TubeNameError(ValueError):
    """A queue or tube name beanstalkd would refuse."""


def encode(name: str, args: Sequence[Any]) -> bytes:
    """The body for job ``name`` called with ``args``; raises TypeError for non-JSON args."""
    try:
        return _encoder.encode({"class": name, "args": list(args)}).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise TypeError(f"job {name!r}: arguments must be JSON data: {exc}") from None


def decode(body: bytes) -> tuple[str, list[Any]]:
    """``(job name, args)`` from a body, or :class:`PayloadError` saying why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise PayloadError("body is JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"body is a JSON {type(data).__name__}, not an object")
    name = data.get("class")
    if not isinstance(name, str) or not name:
        raise PayloadError("body has no \"class\" string naming the job")
    args = data.get("args", [])
    if args is None:
        args = []  # backburner sends "args": null for a job without arguments
    if not isinstance(args, list):
        raise PayloadError(f"\"args\" is a JSON {type(args).__name__}, not an array")
    return name, args


def dasherize(name: str) -> str:
    """``SendMail``/``send_mail`` -> ``send-mail``, ``HTTPRequest`` -> ``http-request``."""
    word = name.replace("::", "/")
    word = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", word)
    word = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", word)
    return word.replace("_", "-").lower()


def tube_name(queue: str, namespace: str = "backburner.worker.queue",
              separator: str = ".") -> str:
    """The tube of ``queue``: backburner's expansion, validated for beanstalkd.

    The namespace is not doubled when ``queue`` already starts with it, and
    runs of the separator collapse to one, as in backburner. Where backburner
    cuts the name at the first ``:`` (its CLI syntax leaking onto the wire),
    we refuse it.
    """
    if not queue:
        raise TubeNameError("queue name is empty")
    prefix = namespace.rstrip(".")
    short = dasherize(queue)
    if short.startswith(namespace):
        short = short[len(namespace):]
    joined = separator.join(p for p in (prefix, short) if p) if prefix else short
    if separator:
        joined = re.sub(f"(?:{re.escape(separator)})+", separator, joined)
    check_tube(joined)
    return joined


def check_tube(tube: str) -> None:
    """Raise :class:`TubeNameError` unless beanstalkd accepts ``tube`` as a name."""
    if ":" in tube:
        raise TubeNameError(f"tube name {tube!r} contains ':', which beanstalkd rejects")
    if len(tube.encode("utf-8")) > MAX_TUBE_BYTES:
        raise TubeNameError(f"tube name is {len(tube.encode())} bytes, "
                            f"beanstalkd allows at most {MAX_TUBE_BYTES}")
    if not _TUBE_CHARS.fullmatch(tube):
        bad = sorted({c for c in tube if not _TUBE_CHARS.fullmatch(c)})
        raise TubeNameError(f"tube name {tube!r} has characters beanstalkd rejects: "
                            f"{''.join(bad)!r} (allowed: A-Z a-z 0-9 + / ; . $ _ ( ) -)")
    if tube.startswith("-"):
        raise TubeNameError(f"tube name {tube!r} starts with '-', which beanstalkd rejects")
