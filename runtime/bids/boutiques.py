"""The BIDS App's Boutiques descriptor (https://boutiques.github.io, schema 0.5), made from its argparse parser so it
cannot drift from the flags: ``python -m runtime.bids --boutiques`` prints it.

Every parser action becomes one Boutiques input (id: its ``dest``, value-key ``[DEST]``): ``store_true`` /
``store_false`` a ``Flag``; ``type=int`` / ``float`` a ``Number``; a path type (``pathlib.Path``, the command lines'
``path_arg``) a ``File``; anything else a ``String``; ``choices`` -> ``value-choices``, ``nargs`` ``+`` / ``*`` ->
``list``, the default -> ``default-value``. The flag written is the action's underscore spelling when it has one
(BIDS Apps' ``--participant_label``), else its first. argparse groups become Boutiques groups. An action of any
other kind raises ValueError: a new kind of flag is described here first.

The BIDS Apps template's shape (what ``bosh validate --bids`` checks): ``mkdir -p [OUTPUT_DIR]; <command>
[BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL] [PARTICIPANT_LABEL] [SESSION_LABEL] ...``, the output folder as two
inputs (``output_dir_name``, a String, for the participant level; ``participant_level_analysis_dir``, a File, for
the group level; one of them required) and as the one output file.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

BIDS_POSITIONALS = ("bids_dir", "output_dir", "analysis_level")
FIRST = ("bids_dir", "output_dir", "analysis_level", "participant_label", "session_label")
OUTPUT_INPUTS = (
    {"id": "output_dir_name", "name": "Output directory name", "type": "String", "value-key": "[OUTPUT_DIR]",
     "optional": True, "description": "participant level: where the derivatives go"},
    {"id": "participant_level_analysis_dir", "name": "Participant level output directory", "type": "File",
     "value-key": "[OUTPUT_DIR]", "optional": True,
     "description": "group level: the participant level's output directory"},
)


def _flag(action: argparse.Action) -> str:
    underscored = [o for o in action.option_strings if o.startswith("--") and "_" in o]
    return (underscored or action.option_strings)[0]


def _input(action: argparse.Action, help_text: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": action.dest, "name": _flag(action) if action.option_strings else action.dest,
                             "value-key": f"[{action.dest.upper()}]", "optional": not action.required,
                             "description": help_text}
    if action.option_strings:
        entry["command-line-flag"] = _flag(action)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        entry.update(type="Flag", optional=True)
        return entry
    if type(action) is not argparse._StoreAction:
        raise ValueError(f"{_flag(action) if action.option_strings else action.dest}: a {type(action).__name__} "
                         "has no Boutiques mapping yet")
    kind = action.type
    if kind in (int, float):
        entry.update(type="Number", integer=kind is int)
    elif kind is Path or getattr(kind, "__name__", "") == "path_arg":
        entry["type"] = "File"
    else:
        entry["type"] = "String"
    if action.choices is not None:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*"):
        entry["list"] = True
        if action.nargs == "+":
            entry["min-list-entries"] = 1
    if action.default is not None and action.default is not argparse.SUPPRESS:
        entry["default-value"] = action.default
    return entry


def descriptor(parser: argparse.ArgumentParser, command: str, version: str) -> dict[str, Any]:
    """The descriptor of ``parser`` (a BIDS App's: positionals ``bids_dir output_dir analysis_level``), run as
    ``command``."""
    formatter = parser._get_formatter()
    inputs: list[dict[str, Any]] = []
    groups = []
    for group in parser._action_groups:
        members = []
        for action in group._group_actions:
            if isinstance(action, argparse._HelpAction) or argparse.SUPPRESS in (action.dest, action.help):
                continue  # --help, --boutiques
            text = " ".join(formatter._expand_help(action).split()) if action.help else action.dest
            if action.dest == "output_dir":
                inputs += [dict(entry) for entry in OUTPUT_INPUTS]
                continue
            inputs.append(_input(action, text))
            members.append(action.dest)
        if members and group.title not in ("positional arguments", "options", "optional arguments"):
            slug = re.sub(r"[^a-z0-9]+", "_", group.title.split("(")[0].lower()).strip("_")
            groups.append({"id": slug, "name": group.title, "members": members})
    groups.append({"id": "output_directory", "name": "Output directory", "mutually-exclusive": True,
                   "one-is-required": True, "members": [entry["id"] for entry in OUTPUT_INPUTS],
                   "description": "the output directory: its name at the participant level, the participant "
                                  "level's output at the group level"})
    missing = [name for name in BIDS_POSITIONALS if name != "output_dir" and name not in
               {entry["id"] for entry in inputs}]
    if missing:
        raise ValueError(f"not a BIDS App parser: no {', '.join(missing)}")
    keys = [f"[{name.upper()}]" for name in FIRST]
    keys += [e["value-key"] for e in inputs if e["value-key"] not in keys]
    return {"name": command, "tool-version": version, "schema-version": "0.5",
            "description": parser.description or command,
            "command-line": f"mkdir -p [OUTPUT_DIR]; {command} " + " ".join(keys),
            "inputs": inputs, "groups": groups,
            "output-files": [{"id": "output_dir", "name": "Output directory", "path-template": "[OUTPUT_DIR]",
                              "optional": False, "description": "the BIDS derivatives dataset"}],
            "tags": {"domain": ["neuroinformatics", "diffusion MRI", "tractography"]}}
