"""Finding the ``movierec`` commands in the services' commands, and checking each is a real one."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from .common import BIN

SHELL_OPERATORS = {"&&", "||", ";", "|", "&", ";;", "(", ")", "do", "done", "then", "else", "fi", "while", "if"}


def expand_vars(text: str, env: dict[str, str]) -> str:
    """$VAR and ${VAR} from ``env`` (empty when unset), like sh for these simple forms."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def movierec_invocations(argv: list[str], env: dict[str, str]) -> list[list[str]]:
    """Every ``movierec ...`` argument list in a container command, including inside ``sh -c``."""
    if not argv:
        return []
    if Path(argv[0]).name == "movierec":
        return [argv[1:]]
    if Path(argv[0]).name in ("sh", "bash", "dash") and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        found = []
        for i, token in enumerate(tokens):
            if token == "movierec" and (i == 0 or tokens[i - 1] in SHELL_OPERATORS):
                args = []
                for arg in tokens[i + 1:]:
                    if arg in SHELL_OPERATORS or arg.startswith(">") or arg.startswith("<"):
                        break
                    args.append(expand_vars(arg, env))
                found.append(args)
        return found
    return []


def check_movierec_command(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> str | None:
    """None if ``movierec ARGS`` names a real command with valid options, else why not.

    ``env`` and ``cwd`` are the environment and directory to run it in (default: this process's).

    ``--help`` is eager: click parses every option first (unknown ones fail) and then prints the
    help of the command the arguments lead to. A group's help lists its commands, so a path that
    stops at a group (``movierec db``) is refused too.
    """
    movierec = BIN / "movierec"
    if not movierec.exists():
        found = shutil.which("movierec")
        if not found:
            return "the movierec console script is not installed"
        movierec = Path(found)
    proc = subprocess.run([str(movierec), *args, "--help"], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**(os.environ if env is None else env), "COLUMNS": "200", "NO_COLOR": "1"})
    shown = shlex.join(["movierec", *args])
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return f"`{shown}` is not a working movierec command (exit {proc.returncode}): " + " | ".join(detail[-6:])
    if re.search(r"^\s*(?:╭─ )?Commands\b", proc.stdout, re.MULTILINE):
        return f"`{shown}` stops at a command group, not a command"
    return None
