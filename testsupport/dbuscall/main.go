// SPDX-License-Identifier: LGPL-2.1-or-later
// SPDX-FileCopyrightText: 2026 The flatpak-sysext developers
// fsx-dbuscall: calls a method of flatpak-sysext's D-Bus interface from inside a Flatpak
// sandbox for tests/test_booted_dbus.py, where no busctl exists (the test runtime is
// empty). Static (CGO_ENABLED=0) like fsx-daemon.
//
// Usage: fsx-dbuscall METHOD [STRING-ARG...]; prints the reply's body, or the D-Bus
// error's name and message and exits 1.
package main

import (
	"fmt"
	"os"

	"github.com/godbus/dbus"
)

const name = "org.flatpak.SystemExtensions1"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fsx-dbuscall METHOD [ARG...]")
		os.Exit(2)
	}
	conn, err := dbus.SystemBus()
	if err != nil {
		fmt.Fprintln(os.Stderr, "system bus:", err)
		os.Exit(1)
	}
	args := make([]interface{}, 0, len(os.Args)-2)
	for _, a := range os.Args[2:] {
		args = append(args, a)
	}
	obj := conn.Object(name, "/org/flatpak/SystemExtensions1")
	call := obj.Call(name+"."+os.Args[1], 0, args...)
	if call.Err != nil {
		if e, ok := call.Err.(dbus.Error); ok {
			fmt.Println("error", e.Name, e.Body)
		} else {
			fmt.Println("error", call.Err)
		}
		os.Exit(1)
	}
	fmt.Println(call.Body...)
}
