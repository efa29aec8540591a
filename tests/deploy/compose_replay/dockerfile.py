"""What the runtime stage of the Dockerfile gives a container: ENV, WORKDIR, CMD, ENTRYPOINT."""

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


def read_image_config(dockerfile: Path) -> ImageConfig:
    """ENV, WORKDIR, CMD and ENTRYPOINT of the final stage of ``dockerfile``."""
    instructions = dockerfile_instructions(dockerfile.read_text())
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    image = ImageConfig()
    for word, args in instructions[last_from + 1:]:
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
