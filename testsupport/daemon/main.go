// SPDX-License-Identifier: LGPL-2.1-or-later
// SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
// fsx-daemon: a D-Bus system service for the booted-host tests (tests/test_booted.py).
//
// It owns the bus name given as its only argument and answers Version() on the object
// path and interface derived from it with the version string set at build time
// (go build -ldflags "-X main.version=v1"), so a test can tell which build answers.
// Built statically (CGO_ENABLED=0), it needs no library from the host, like the
// extensions flatpak-sysext accepts.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/godbus/dbus"
)

var version = "unset"

type server struct{}

// Version is the method the tests call with busctl.
func (server) Version() (string, *dbus.Error) {
	return version, nil
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: fsx-daemon BUS-NAME")
		os.Exit(2)
	}
	name := os.Args[1]
	conn, err := dbus.SystemBus()
	if err != nil {
		fmt.Fprintln(os.Stderr, "system bus:", err)
		os.Exit(1)
	}
	path := dbus.ObjectPath("/" + strings.ReplaceAll(name, ".", "/"))
	if err := conn.Export(server{}, path, name); err != nil {
		fmt.Fprintln(os.Stderr, "export:", err)
		os.Exit(1)
	}
	reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		fmt.Fprintln(os.Stderr, "could not own", name, err)
		os.Exit(1)
	}
	fmt.Println("serving", name, version)
	select {}
}
