"""What a stage of the Dockerfile gives a container: ENV, WORKDIR, CMD, ENTRYPOINT."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImageConfig:
    """What the runtime stage of the Dockerfile gives a container: ENV, WORKDIR, CMD, ENTRYPOINT."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def read_image_config(dockerfile: Path, target: str | None = None) -> ImageConfig:
    """ENV, WORKDIR, CMD and ENTRYPOINT of stage ``target`` of ``dockerfile`` (default: the last),
    including what it inherits from the stages it is built FROM."""
    instructions = dockerfile_instructions(dockerfile.read_text())
    stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}  # name -> (parent, instructions)
    order: list[str] = []
    for word, args in instructions:
        if word == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(order))
            stages[name] = (words[0], [])
            order.append(name)
        elif order:
            stages[order[-1]][1].append((word, args))
    name = target or order[-1]
    if name not in stages:
        raise ValueError(f"{dockerfile} has no stage {name!r}")
    chain: list[tuple[str, str]] = []
    while name in stages:
        parent, own = stages[name]
        chain = own + chain
        name = parent
    image = ImageConfig()
    for word, args in chain:
        if word == "ENV":
            tokens = shlex.split(args)
            if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
                image.env[tokens[0]] = " ".join(tokens[1:])
            for token in tokens:
                key, sep, value = token.partition("=")
                if sep:
                    image.env[key] = value
        elif word == "WORKDIR":
            image.workdir = args if args.startswith("/") else f"{image.workdir.rstrip('/')}/{args}"
        elif word in ("CMD", "ENTRYPOINT"):
            value = json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]
            setattr(image, word.lower(), value)
    return image
