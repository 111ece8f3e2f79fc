# SPDX-License-Identifier: LGPL-2.1-or-later
# SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
"""Every problem code flatpak-sysext reports: the one registry.

A code is stable: scripts and people match on it. Each is documented, with the rule,
why it exists and what to change, in docs/problems.md (a test holds the two, and the
JSON schemas' enums, to this registry). Rejections make an extension unusable;
warnings are reported and change nothing.
"""

from __future__ import annotations

# Rejections: the tree itself (validate, installation, release, elf).
INVALID_NAME = "invalid-name"
NOT_A_DIRECTORY = "not-a-directory"
ESCAPES_DEPLOYMENT = "escapes-deployment"
MISSING_EXTENSION_RELEASE = "missing-extension-release"
INCOMPATIBLE_OS = "incompatible-os"
INCOMPATIBLE_ARCHITECTURE = "incompatible-architecture"
INCOMPATIBLE_SCOPE = "incompatible-scope"
CONTAINS_OS_RELEASE = "contains-os-release"
SPECIAL_FILE = "special-file"
SETUID = "setuid"
FILE_CAPABILITIES = "file-capabilities"
NOT_OWNED_BY_ROOT = "not-owned-by-root"
UNSAFE_PERMISSIONS = "unsafe-permissions"
DYNAMIC_ELF = "dynamic-elf"
SHARED_LIBRARY = "shared-library"
UNSUPPORTED_ELF = "unsupported-elf"
FOREIGN_ELF = "foreign-elf"
MALFORMED_ELF = "malformed-elf"
# Rejections: containment (contain, rules); restricted-content is decided with the config.
UNCLASSIFIED_FILE = "unclassified-file"
RESTRICTED_CONTENT = "restricted-content"
MALFORMED_CONFIG = "malformed-config"
ESCAPING_SYMLINK = "escaping-symlink"
TOO_MANY_FILES = "too-many-files"
TOO_DEEP = "too-deep"
PATH_TOO_LONG = "path-too-long"
TREE_TOO_LARGE = "tree-too-large"
# Rejections: the deployment against its signed commit (ostree, decided at snapshot).
COMMIT_UNAVAILABLE = "commit-unavailable"
SIGNATURE_INVALID = "signature-invalid"
REF_BINDING_MISMATCH = "ref-binding-mismatch"
CONTENT_MISMATCH = "content-mismatch"
UNSUPPORTED_REPO = "unsupported-repo"
# Rejections: where the tree would land on this machine (placement).
SHADOWS_HOST_FILE = "shadows-host-file"
CONFLICTS_WITH_EXTENSION = "conflicts-with-extension"
OUTRANKS_HOST_FILE = "outranks-host-file"

# Warnings.
AMBIGUOUS_EXTENSION_RELEASE = "ambiguous-extension-release"
IGNORED_TOP_LEVEL_ENTRY = "ignored-top-level-entry"
MISSING_PROGRAM = "missing-program"

REJECTIONS: dict[str, str] = {
    INVALID_NAME: "the app ID cannot name a system extension",
    NOT_A_DIRECTORY: "the declared path, or a top-level usr or opt, is not a directory",
    ESCAPES_DEPLOYMENT: "the declared path resolves outside the app's files",
    MISSING_EXTENSION_RELEASE: "no readable extension-release file named for the app",
    INCOMPATIBLE_OS: "ID, VERSION_ID or SYSEXT_LEVEL do not match the host",
    INCOMPATIBLE_ARCHITECTURE: "ARCHITECTURE is not the host's",
    INCOMPATIBLE_SCOPE: "SYSEXT_SCOPE does not include system",
    CONTAINS_OS_RELEASE: "the tree ships usr/lib/os-release",
    SPECIAL_FILE: "a device node, FIFO, socket or overlayfs attribute",
    SETUID: "a setuid or setgid file",
    FILE_CAPABILITIES: "a file with capabilities (security.capability)",
    NOT_OWNED_BY_ROOT: "an installed file or directory, or the installation's, not root's",
    UNSAFE_PERMISSIONS: "a group- or world-writable entry, or a directory not 0755",
    DYNAMIC_ELF: "an ELF executable that needs a loader or shared libraries",
    SHARED_LIBRARY: "an ELF shared library",
    UNSUPPORTED_ELF: "an ELF file that is not an executable",
    FOREIGN_ELF: "an ELF file built for another machine",
    MALFORMED_ELF: "a file with the ELF magic that cannot be parsed",
    UNCLASSIFIED_FILE: "a file in none of the places an extension may use",
    RESTRICTED_CONTENT: "content that changes the host beyond the extension's own services",
    MALFORMED_CONFIG: "a unit, D-Bus, polkit, udev, sysusers or tmpfiles file that cannot "
                      "be read",
    ESCAPING_SYMLINK: "a symlink that does not resolve inside the tree",
    TOO_MANY_FILES: "more entries in the tree than flatpak-sysext validates",
    TOO_DEEP: "directories nested deeper than flatpak-sysext validates",
    PATH_TOO_LONG: "a path longer than the host can name",
    TREE_TOO_LARGE: "more bytes in the tree than flatpak-sysext copies",
    COMMIT_UNAVAILABLE: "the deployment's commit cannot be read from the repository",
    SIGNATURE_INVALID: "the commit is not signed by a key of the pinned keyring",
    REF_BINDING_MISMATCH: "the commit is bound to another ref or collection",
    CONTENT_MISMATCH: "the deployed tree differs from what the commit holds",
    UNSUPPORTED_REPO: "a repository mode flatpak-sysext cannot verify",
    SHADOWS_HOST_FILE: "a file that would replace one of the host's",
    CONFLICTS_WITH_EXTENSION: "a file another linked extension provides too",
    OUTRANKS_HOST_FILE: "a file a host search path would find before a host file",
}
WARNINGS: dict[str, str] = {
    AMBIGUOUS_EXTENSION_RELEASE: "systemd versions read the extension-release differently",
    IGNORED_TOP_LEVEL_ENTRY: "a top-level entry other than usr and opt is never merged",
    MISSING_PROGRAM: "a program a unit or D-Bus service runs is in neither the tree nor the host",
}
ALL: frozenset[str] = frozenset(REJECTIONS) | frozenset(WARNINGS)
