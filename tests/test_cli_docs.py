# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""The command line as ``--help``, the man page and docs/reference.md tell it: one truth.

Every expectation is derived from the code (the argparse parser, the JSON schemas, the
names the state modules write, the Makefile's install paths), never copied from a doc.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from flatpak_sysext import cli, config, quick
from flatpak_sysext.host import pkgtransaction
from flatpak_sysext.state import (
    announce,
    answer,
    cache,
    consent,
    hoststate,
    keyring,
    provided,
    request,
    statefiles,
    store,
    told,
)
from testsupport.source import SOURCE_ROOT

MAN = SOURCE_ROOT / "docs" / "flatpak-sysext.8"
REFERENCE = SOURCE_ROOT / "docs" / "reference.md"
SCHEMAS = SOURCE_ROOT / "flatpak_sysext" / "schemas"


def _commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _synopsis(name: str, parser: argparse.ArgumentParser) -> str:
    """The synopsis the parser implies: positionals, then each option as it is spelled."""
    words = [f"flatpak-sysext {name}"]
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    for a in actions:
        if not a.option_strings:
            words.append(str(a.metavar or "|".join(a.choices or ())))
    for a in actions:
        if a.option_strings:
            value = a.metavar or ("|".join(a.choices) if a.choices else None)
            word = f"[{a.option_strings[0]}{f' {value}' if value and a.nargs != 0 else ''}]"
            words.append(word + ("..." if isinstance(a, argparse._AppendAction) else ""))
    return " ".join(words)


SYNOPSES = {name: _synopsis(name, p) for name, p in _commands().items()}
# The top-level parser's one option of its own.
VERSION = "flatpak-sysext " + next(a.option_strings[0] for a in cli._parser()._actions
                                   if isinstance(a, argparse._VersionAction))


def _man_text() -> str:
    """The man page as plain text: one line per paragraph, ``.SH`` headings kept as
    ``# NAME``, ``.br``/``.TP``/``.PP`` as line breaks, fonts dropped."""
    out: list[str] = []
    line: list[str] = []

    def flush() -> None:
        if line:
            out.append(" ".join(line))
            line.clear()

    for raw in MAN.read_text().replace("\\-", "-").replace("\\&", "").splitlines():
        macro, _, rest = raw.partition(" ") if raw.startswith(".") else ("", "", raw)
        args = re.findall(r'"[^"]*"|\S+', rest)
        args = [a.strip('"') for a in args]
        if macro == ".SH":
            flush()
            out.append("# " + " ".join(args))
        elif macro in (".br", ".TP", ".PP", ".IP"):
            flush()
        elif macro in (".B", ".I"):
            line.append(" ".join(args))
        elif macro in (".BR", ".RB", ".IR", ".RI", ".BI", ".IB"):
            line.append("".join(args))
        elif not macro:
            line.append(raw)
    flush()
    return "\n".join(out)


def _man_section(title: str) -> str:
    text = _man_text()
    return text.split(f"# {title}\n", 1)[1].split("\n# ", 1)[0]


def _reference_section(heading: str) -> str:
    text = REFERENCE.read_text()
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _doc_synopses() -> list[tuple[str, str]]:
    """(where, line) of every synopsis-like line in the docs, README and man page."""
    found = []
    for path in [SOURCE_ROOT / "README.md", *sorted((SOURCE_ROOT / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            line = line.strip().strip("`")
            if line.startswith("flatpak-sysext ") and " [--" in line:
                found.append((path.name, line))
    found += [("flatpak-sysext.8", line) for line in _man_section("SYNOPSIS").splitlines()
              if line != VERSION]
    return found


def test_every_command_has_a_description_and_every_option_help() -> None:
    for name, parser in _commands().items():
        assert parser.description, name
        assert name in parser.format_help()
        for a in parser._actions:
            assert a.help, (name, a.dest)


def test_config_help_talks_about_check_only_in_check() -> None:
    for name, parser in _commands().items():
        helps = [a.help or "" for a in parser._actions if "--config" in a.option_strings]
        if name == "dbus-service":
            assert helps == []  # D-Bus activation starts it; it reads the default config
        else:
            [text] = helps
            assert name == "check" or "check" not in text, name


def test_remove_all_says_what_it_removes() -> None:
    parser = _commands()["remove-all"]
    assert "our state" not in parser.format_help()
    assert statefiles.STATE_DIR in (parser.description or "")
    assert statefiles.SERVICE_DIR in (parser.description or "")


def test_synopses_agree_with_the_parser_everywhere() -> None:
    found = _doc_synopses()
    for where, line in found:
        assert line in SYNOPSES.values(), f"{where}: {line!r} is not one of {SYNOPSES}"
    man = _man_section("SYNOPSIS").splitlines()
    reference = _reference_section("## Command line")
    for synopsis in SYNOPSES.values():
        assert synopsis in man, f"man page SYNOPSIS lacks {synopsis!r}"
        assert f"\n{synopsis}\n" in reference, f"reference.md lacks {synopsis!r}"


def test_every_command_is_described_in_the_man_page_and_reference() -> None:
    commands = _man_section("COMMANDS")
    headings = re.findall(r"^### (.+)$", _reference_section("## Command line"), re.M)
    described = {w for h in headings for w in re.findall(r"[a-z][a-z-]+", h)}
    for name in SYNOPSES:
        assert re.search(rf"^{re.escape(name)}\b", commands, re.M), f"man COMMANDS: {name}"
        assert name in described, f"reference.md has no ### heading for {name}"


def _reference_exit_codes() -> dict[str, set[str]]:
    table = _reference_section("## Command line").split("### Exit codes", 1)[1]
    rows = [r for r in table.splitlines() if r.startswith("| `")]
    header = [c.strip() for c in table.split("\n| command |", 1)[1].splitlines()[0].split("|")]
    out = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        codes = {header[i] for i, c in enumerate(cells[1:]) if c}
        for name in re.findall(r"`([a-z-]+)`", cells[0]):
            out[name] = codes
    return out


def test_exit_codes_are_given_for_every_command_and_agree() -> None:
    reference = _reference_exit_codes()
    assert set(reference) == set(SYNOPSES)
    man = _man_section("EXIT STATUS")
    for name, codes in reference.items():
        entry = re.search(rf"^{re.escape(name)} (.*)$", man, re.M)
        assert entry, f"man EXIT STATUS: {name}"
        said = set(re.findall(r"\b(\d+)\b", entry.group(1)))
        assert codes <= said, (name, codes, said)


def _schema(name: str) -> Any:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def test_every_state_is_in_the_man_page_and_reference() -> None:
    item = _schema("status")["definitions"]["item"]
    states = item["properties"]["state"]["enum"]
    [man] = re.findall(r"^status .*$", _man_section("COMMANDS"), re.M)
    table = _reference_section("## Extension states")
    for state in states:
        if state != "foreign":  # an entry of the target directory, not an extension
            assert re.search(rf"\b{state}\b", man), f"man page, status: state {state}"
        assert f"| `{state}` |" in table, f"reference.md: state {state}"


def test_status_json_fields_are_documented() -> None:
    item = _schema("status")["definitions"]["item"]
    text = _reference_section("## Command line").split("### status", 1)[1].split("\n### ")[0]
    for field in item["properties"]:
        assert f"`{field}`" in text, f"reference.md, status --json: {field}"


def test_every_config_key_is_in_the_man_page_and_configuration_md() -> None:
    files = _man_section("FILES")
    configuration = (SOURCE_ROOT / "docs" / "configuration.md").read_text()
    keys = configuration.split("\n## Keys\n", 1)[1].split("\n## ", 1)[0]
    for key in _schema("config")["properties"]:
        assert re.search(rf"\b{key}\b", files), f"man page FILES: {key}"
        assert f"[`{key}`](#{key})" in keys, f"configuration.md, Keys: {key}"
        assert f"\n## {key}\n" in configuration, f"configuration.md: no section {key}"


def test_every_file_written_is_in_the_man_page_and_reference() -> None:
    files, locations = _man_section("FILES"), _reference_section("## File locations")
    for name in [cache.NAME, consent.FILE_NAME, hoststate.STATE_FILE, keyring.KEYRINGS,
                 provided.NAME, request.NAME, statefiles.LOCK_NAME, store.STORE,
                 told.FILE_NAME, quick.STAMP_NAME, config.MEMO_NAME,
                 pkgtransaction.HOLDERS_DIR, pkgtransaction.LOCK_NAME,
                 answer.FILE_NAME, announce.BASELINE, announce.QUEUE,
                 statefiles.SERVICE_DIR, "/run/flatpak-sysext"]:
        # As a name of its own (``announce`` is not ``announced.json``, ``lock`` not
        # ``transactions.lock``), and in reference.md in backquotes or as a file's heading.
        word = rf"(?<![\w.-]){re.escape(name)}(?![\w-])"
        assert re.search(word, files), f"man page FILES: {name}"
        assert re.search(rf"`[^`\n]*{word}[^`\n]*`|^#+ {re.escape(name)}/?$", locations,
                         re.M), f"reference.md: {name}"


def _installed_example() -> str:
    """Where ``make install PREFIX=/usr`` puts the example configuration (Makefile)."""
    make = (SOURCE_ROOT / "Makefile").read_text()
    variables = dict(re.findall(r"^([A-Z]+) \?= (.*)$", make, re.M))
    variables["PREFIX"] = "/usr"
    path = variables["EXAMPLEDIR"]
    while "$(" in path:
        path = re.sub(r"\$\(([A-Z]+)\)", lambda m: variables[m[1]], path)
    [target] = re.findall(r"\$\(EXAMPLEDIR\)/(\S+)$", make, re.M)[:1]
    return f"{path}/{target}"


def test_the_example_configuration_is_given_one_way() -> None:
    example = _installed_example()
    assert example.startswith("/usr/share/doc/flatpak-sysext/")
    texts = {p.name: p.read_text() for p in [SOURCE_ROOT / "README.md",
                                               *(SOURCE_ROOT / "docs").glob("*.md")]}
    texts["flatpak-sysext.8"] = _man_text()
    mentions = {(where, m) for where, text in texts.items()
                for m in re.findall(r"[\w%{}$()./-]*config\.json\.example", text)}
    assert mentions, "the example configuration is documented somewhere"
    # The file's bare name is fine; any path to it is the installed one.
    assert {m for _, m in mentions} <= {example, "config.json.example"}, sorted(mentions)


def test_see_also_names_documents_every_packaging_installs() -> None:
    see_also = _man_section("SEE ALSO")
    docdir = _installed_example().rsplit("/", 2)[0] + "/"
    assert docdir in see_also
    named = set(re.findall(r"([\w.-]+\.md)\b", see_also))
    assert "problems.md" in named and "configuration.md" in named
    packagings = {"debian": (SOURCE_ROOT / "packaging/debian/flatpak-sysext.docs").read_text(),
                  "rpm": (SOURCE_ROOT / "packaging/flatpak-sysext.spec").read_text(),
                  "pacman": (SOURCE_ROOT / "packaging/PKGBUILD").read_text()}
    for doc in named:
        for packaging, text in packagings.items():
            assert re.search(rf"(^|[\s/]){re.escape(doc)}\b", text, re.M), (packaging, doc)
